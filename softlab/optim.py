"""Optimizers from a config section, and ⊥Grad (perpgrad) as an optax transform.

`make_optimizer(config.optimizer)` returns one
`optax.GradientTransformationExtraArgs` that every training loop calls the same
way:

    updates, opt_state = tx.update(grads, opt_state, params, grad_fn=grad_fn)

with `grad_fn(params, i) -> grads` the gradient of the same loss on the same
batch at other parameters, e.g.
`grad_fn = lambda p, _: jax.grad(lambda p: loss_fn(p, batch)[0])(p)`. Only SAM
calls it (once per update, at the adversarially perturbed parameters); the
other optimizers ignore it, so a loop may always pass it. `params` is always
required (⊥Grad and weight decay need it).

The config section (an `ml_collections.ConfigDict` or a plain mapping) has the
fields of `DEFAULTS`; `name` and `lr` are required, unknown fields are errors:
- name: "adamw" (decoupled weight decay), "adam" (weight decay added to the
  gradient as L2, as torch.optim.Adam does), "sgd" (momentum, nesterov; weight
  decay as L2).
- lr and schedule: "constant"; "warmup_cosine" (0 -> lr linearly over
  warmup_steps, then cosine to 0 at total_steps); "step" (lr multiplied by
  decay_factor at each of `boundaries`, counted in optimizer steps from 0, e.g.
  epochs 50 and 75 times steps per epoch). warmup_steps > 0 also ramps the
  other two schedules linearly from 0.
- b1, b2, eps: Adam's (0.9, 0.999, 1e-8) unless set; eps is added outside the
  square root. The grokking configs set b2 = 0.99, eps = 1e-25.
- weight_decay (0), momentum (0), nesterov (False), grad_clip_norm (None = no
  clipping, else clip by global norm first).
- perpgrad: ⊥Grad on the (clipped) gradient before the base optimizer, so
  Adam's moments and any weight decay see the projected gradient.
- sam, sam_rho (0.05): SAM via `optax.contrib.sam` in opaque mode: one ascent
  step of length rho along the normalized gradient, then the base optimizer
  (with clipping and ⊥Grad) on the gradient there.

Numbers are checked as they run: in the float dtype JAX gives Python numbers,
float32, or float64 when x64 is on (`config.train.x64`, which float64 training
needs). So lr=1e39 (inf in float32) is refused, and so is b2=0.99999999 (1.0
in float32), instead of a run on inf or on a frozen second moment. The section
does not know config.train.dtype: parameters in another dtype than that one
(float32 under x64, bfloat16, float16) are not considered.
"""

from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import optax
import optax.contrib

from softlab.registry import Registry
from softlab.validation import check_number

OPTIMIZERS = Registry("optimizer")
SCHEDULES = Registry("schedule")

# Every field of the optimizer section and its default; None = required.
DEFAULTS: dict[str, Any] = {
    "name": None,
    "lr": None,
    "schedule": "constant",
    "warmup_steps": 0,
    "total_steps": 0,
    "boundaries": (),
    "decay_factor": 0.1,
    "b1": 0.9,
    "b2": 0.999,
    "eps": 1e-8,
    "weight_decay": 0.0,
    "momentum": 0.0,
    "nesterov": False,
    "grad_clip_norm": None,
    "perpgrad": False,
    "sam": False,
    "sam_rho": 0.05,
}

def freeze(tx: optax.GradientTransformation, trainable) -> optax.GradientTransformationExtraArgs:
  """`tx` on the parameters `trainable(params)` marks True; the others get zero updates.

  Frozen parameters get no optimizer state (optax.multi_transform with
  set_to_zero), so weight decay cannot move them either.
  """
  labels = lambda params: jax.tree.map(lambda t: "trained" if t else "frozen", trainable(params))
  return optax.multi_transform({"trained": tx, "frozen": optax.set_to_zero()}, labels)


# ---------------------------------------------------------------------------
# ⊥Grad.
# ---------------------------------------------------------------------------


def _project_out_weights(g: jax.Array, w: jax.Array) -> jax.Array:
  """g minus its component along w, rescaled to ||g|| (in float32 or wider)."""
  dtype = jnp.promote_types(g.dtype, jnp.float32)
  flat_g, flat_w = g.astype(dtype).ravel(), w.astype(dtype).ravel()
  along = jnp.vdot(flat_w, flat_g) / (jnp.vdot(flat_w, flat_w) + 1e-30)
  perp = flat_g - along * flat_w
  perp = perp * (jnp.linalg.norm(flat_g) / (jnp.linalg.norm(perp) + 1e-30))
  return perp.reshape(g.shape).astype(g.dtype)


def perpgrad() -> optax.GradientTransformation:
  """⊥Grad: per tensor, remove the gradient's component along the weights.

  For each parameter tensor w with gradient g (flattened):
    g_perp = g - (w.g) / (w.w + 1e-30) w
    g <- g_perp ||g|| / (||g_perp|| + 1e-30)
  The update is orthogonal to w and as long as g, so the step cannot simply
  scale up the weights (Naive Loss Minimization). Zero-size and zero tensors
  stay as they are. Put it before the base optimizer.

  Returns:
    A stateless transformation whose `update` requires `params`.

  References:
    Prieto et al., "Grokking at the Edge of Numerical Stability",
    arXiv:2501.04697.
  """

  def init_fn(params):
    del params
    return optax.EmptyState()

  def update_fn(updates, state, params=None):
    if params is None:
      raise ValueError("perpgrad needs params: call update(grads, state, params)")
    return jax.tree.map(_project_out_weights, updates, params), state

  return optax.GradientTransformation(init_fn, update_fn)


def _unit_global_norm() -> optax.GradientTransformation:
  """updates / their global norm; zero updates stay 0 (optax's normalize: NaN)."""

  def update_fn(updates, state, params=None):
    del params
    norm = optax.tree.norm(updates)
    scale = 1 / jnp.where(norm > 0, norm, 1)
    return jax.tree.map(lambda u: (u * scale).astype(u.dtype), updates), state

  init_fn = lambda params: optax.EmptyState()
  return optax.GradientTransformation(init_fn, update_fn)


# ---------------------------------------------------------------------------
# Config fields.
# ---------------------------------------------------------------------------


def _fields(config) -> dict[str, Any]:
  """The optimizer section as a dict with defaults filled in and validated."""
  if hasattr(config, "to_dict"):
    config = config.to_dict()
  if not isinstance(config, Mapping):
    raise ValueError(
        "optimizer config must be a ConfigDict or a mapping, got"
        f" {type(config).__name__}"
    )
  unknown = sorted(set(config) - set(DEFAULTS))
  if unknown:
    raise ValueError(
        f"unknown field optimizer.{unknown[0]}; valid: {', '.join(DEFAULTS)}"
    )
  fields = {**DEFAULTS, **config}
  for name in ("name", "lr"):
    if fields[name] is None:
      raise ValueError(f"optimizer.{name} is required")
  if fields["name"] not in OPTIMIZERS:
    raise ValueError(
        f"optimizer.name={fields['name']!r} is not valid; valid:"
        f" {', '.join(OPTIMIZERS.names())}"
    )
  if fields["schedule"] not in SCHEDULES:
    raise ValueError(
        f"optimizer.schedule={fields['schedule']!r} is not valid; valid:"
        f" {', '.join(SCHEDULES.names())}"
    )
  _check(fields, "lr", lambda v: v > 0, "> 0")
  _check(fields, "warmup_steps", lambda v: v >= 0, ">= 0")
  _check(fields, "decay_factor", lambda v: v > 0, "> 0")
  _check(fields, "b1", lambda v: 0 <= v < 1, "in [0, 1)")
  _check(fields, "b2", lambda v: 0 <= v < 1, "in [0, 1)")
  _check(fields, "eps", lambda v: v >= 0, ">= 0")
  _check(fields, "weight_decay", lambda v: v >= 0, ">= 0")
  _check(fields, "momentum", lambda v: 0 <= v < 1, "in [0, 1)")
  _check(fields, "sam_rho", lambda v: v > 0, "> 0")
  if fields["grad_clip_norm"] is not None:
    _check(fields, "grad_clip_norm", lambda v: v > 0, "> 0 or None (no clipping)")
  if fields["nesterov"] and fields["momentum"] == 0:
    raise ValueError("optimizer.nesterov needs optimizer.momentum > 0")
  return fields


def _check(fields, name, valid, description):
  check_number(fields[name], f"optimizer.{name}", valid, description, required=True,
               dtype=jax.dtypes.canonicalize_dtype(jnp.float64))


# ---------------------------------------------------------------------------
# Schedules.
# ---------------------------------------------------------------------------


def _linear_warmup(schedule: optax.Schedule, warmup_steps: int) -> optax.Schedule:
  """schedule(step) times min(step / warmup_steps, 1)."""
  if not warmup_steps:
    return schedule
  return lambda step: schedule(step) * jnp.minimum(step / warmup_steps, 1)


@SCHEDULES.register("constant")
def _constant(fields) -> optax.Schedule:
  schedule = optax.constant_schedule(fields["lr"])
  return _linear_warmup(schedule, fields["warmup_steps"])


@SCHEDULES.register("warmup_cosine")
def _warmup_cosine(fields) -> optax.Schedule:
  total = fields["total_steps"]
  if not isinstance(total, int) or total <= fields["warmup_steps"]:
    raise ValueError(
        "optimizer.total_steps must be an integer above optimizer.warmup_steps"
        f" ({fields['warmup_steps']}) for schedule 'warmup_cosine', got"
        f" {fields['total_steps']!r}"
    )
  return optax.warmup_cosine_decay_schedule(
      init_value=0.0,
      peak_value=fields["lr"],
      warmup_steps=fields["warmup_steps"],
      decay_steps=fields["total_steps"],
      end_value=0.0,
  )


@SCHEDULES.register("step")
def _step(fields) -> optax.Schedule:
  boundaries = list(fields["boundaries"] or ())
  if not boundaries or any(
      not isinstance(b, int) or b <= 0 for b in boundaries
  ) or boundaries != sorted(set(boundaries)):
    raise ValueError(
        "optimizer.boundaries must be increasing positive integers (steps) for"
        f" schedule 'step', got {fields['boundaries']!r}"
    )
  schedule = optax.piecewise_constant_schedule(
      fields["lr"], {b: fields["decay_factor"] for b in boundaries}
  )
  return _linear_warmup(schedule, fields["warmup_steps"])


def make_schedule(config) -> optax.Schedule:
  """The learning-rate schedule of an optimizer config section (see module doc).

  Args:
    config: the optimizer section (ConfigDict or mapping).

  Returns:
    step -> learning rate.
  """
  fields = _fields(config)
  return SCHEDULES.get(fields["schedule"])(fields)


# ---------------------------------------------------------------------------
# Optimizers.
# ---------------------------------------------------------------------------


def _l2(fields) -> list[optax.GradientTransformation]:
  decay = fields["weight_decay"]
  return [optax.add_decayed_weights(decay)] if decay else []


@OPTIMIZERS.register("adamw")
def _adamw(fields, schedule) -> optax.GradientTransformation:
  return optax.adamw(
      schedule,
      b1=fields["b1"],
      b2=fields["b2"],
      eps=fields["eps"],
      weight_decay=fields["weight_decay"],
  )


@OPTIMIZERS.register("adam")
def _adam(fields, schedule) -> optax.GradientTransformation:
  adam = optax.adam(schedule, b1=fields["b1"], b2=fields["b2"], eps=fields["eps"])
  return optax.chain(*_l2(fields), adam)


@OPTIMIZERS.register("sgd")
def _sgd(fields, schedule) -> optax.GradientTransformation:
  sgd = optax.sgd(
      schedule, momentum=fields["momentum"] or None, nesterov=fields["nesterov"]
  )
  return optax.chain(*_l2(fields), sgd)


def make_optimizer(config) -> optax.GradientTransformationExtraArgs:
  """The optimizer of a config section: clip -> ⊥Grad -> base, optionally in SAM.

  See the module doc for the fields, their defaults and how a loop calls the
  result (always `tx.update(grads, state, params, grad_fn=grad_fn)`).

  Args:
    config: the optimizer section (ConfigDict or mapping).

  Returns:
    An optax transformation accepting the `grad_fn` extra argument.

  References:
    Foret et al., "Sharpness-Aware Minimization for Efficiently Improving
    Generalization", arXiv:2010.01412 (SAM); Prieto et al.,
    arXiv:2501.04697 (⊥Grad).
  """
  fields = _fields(config)
  schedule = SCHEDULES.get(fields["schedule"])(fields)
  steps = []
  if fields["grad_clip_norm"] is not None:
    steps.append(optax.clip_by_global_norm(fields["grad_clip_norm"]))
  if fields["perpgrad"]:
    steps.append(perpgrad())
  steps.append(OPTIMIZERS.get(fields["name"])(fields, schedule))
  tx = optax.chain(*steps)
  if not fields["sam"]:
    return tx
  ascent = optax.chain(_unit_global_norm(), optax.sgd(fields["sam_rho"]))
  return optax.contrib.sam(tx, ascent, sync_period=2, opaque_mode=True)
