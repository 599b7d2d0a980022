"""⊥Grad and the optimizer factory: projections, schedules, every option combination, errors."""

import itertools

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from softlab import optim

RNG = np.random.default_rng(0)
PARAMS = {
    "dense": {"kernel": RNG.standard_normal((5, 4)).astype(np.float32), "bias": RNG.standard_normal(4).astype(np.float32)},
    "conv": RNG.standard_normal((3, 3, 2, 4)).astype(np.float32),
}
GRADS = jax.tree.map(lambda p: RNG.standard_normal(p.shape).astype(np.float32), PARAMS)


def project_numpy(g, w):
  """⊥Grad on one tensor in float64."""
  g, w = np.asarray(g, np.float64).ravel(), np.asarray(w, np.float64).ravel()
  perp = g - (w @ g) / (w @ w + 1e-30) * w
  return perp * np.linalg.norm(g) / (np.linalg.norm(perp) + 1e-30)


# ---------------------------------------------------------------------------
# ⊥Grad.
# ---------------------------------------------------------------------------


def test_perpgrad_is_orthogonal_to_the_weights_and_keeps_the_norm():
  tx = optim.perpgrad()
  updates, _ = jax.jit(tx.update)(GRADS, tx.init(PARAMS), PARAMS)
  for u, g, w in zip(jax.tree.leaves(updates), jax.tree.leaves(GRADS), jax.tree.leaves(PARAMS)):
    u64, w64 = np.asarray(u, np.float64).ravel(), np.asarray(w, np.float64).ravel()
    assert u.dtype == g.dtype and u.shape == g.shape
    assert abs(u64 @ w64) / (np.linalg.norm(u64) * np.linalg.norm(w64)) < 1e-6
    np.testing.assert_allclose(np.linalg.norm(u64), np.linalg.norm(g), rtol=1e-6)
    np.testing.assert_allclose(u64, project_numpy(g, w), rtol=1e-5, atol=1e-6)


def test_perpgrad_edge_tensors_are_unchanged_and_finite():
  params = {"empty": jnp.zeros((0, 3)), "zero_grad": jnp.ones(4), "zero_weights": jnp.zeros(4),
            "half": jnp.ones(3, jnp.bfloat16)}
  grads = {"empty": jnp.zeros((0, 3)), "zero_grad": jnp.zeros(4), "zero_weights": jnp.arange(4.0),
           "half": jnp.array([1.0, -2.0, 0.5], jnp.bfloat16)}
  updates, _ = optim.perpgrad().update(grads, optax.EmptyState(), params)
  assert updates["empty"].shape == (0, 3)
  np.testing.assert_array_equal(updates["zero_grad"], 0.0)
  np.testing.assert_allclose(updates["zero_weights"], grads["zero_weights"], rtol=1e-6)
  assert updates["half"].dtype == jnp.bfloat16
  assert all(np.all(np.isfinite(np.asarray(u, np.float32))) for u in jax.tree.leaves(updates))
  half = np.asarray(updates["half"], np.float64)
  assert abs(half.sum()) / np.linalg.norm(half) < 1e-2  # orthogonal to all-ones, to bf16 precision


def test_perpgrad_needs_params():
  with pytest.raises(ValueError, match=r"perpgrad needs params: call update\(grads, state, params\)"):
    optim.perpgrad().update(GRADS, optax.EmptyState())


def test_perpgrad_feeds_adamw_under_jit():
  tx = optax.chain(optim.perpgrad(), optax.adamw(1e-2, b2=0.99, eps=1e-25, weight_decay=0.1))
  state = tx.init(PARAMS)
  updates, state = jax.jit(tx.update)(GRADS, state, PARAMS)
  projected = jax.tree.map(lambda g, w: project_numpy(g, w).reshape(g.shape).astype(np.float32), GRADS, PARAMS)
  adamw = optax.adamw(1e-2, b2=0.99, eps=1e-25, weight_decay=0.1)
  want, _ = adamw.update(projected, adamw.init(PARAMS), PARAMS)
  for got, expected in zip(jax.tree.leaves(updates), jax.tree.leaves(want)):
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-7)
  # The factory places it the same way.
  config = {"name": "adamw", "lr": 1e-2, "b2": 0.99, "eps": 1e-25, "weight_decay": 0.1, "perpgrad": True}
  factory = optim.make_optimizer(config)
  got, _ = factory.update(GRADS, factory.init(PARAMS), PARAMS)
  for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)


# ---------------------------------------------------------------------------
# The factory: every name x schedule x flag builds and steps.
# ---------------------------------------------------------------------------

SCHEDULE_FIELDS = {
    "constant": {},
    "warmup_cosine": {"warmup_steps": 1, "total_steps": 10},
    "step": {"boundaries": [1, 3], "decay_factor": 0.5},
}


def quadratic(params):
  return sum(jnp.sum((p - 0.5) ** 2) for p in jax.tree.leaves(params))


GRAD_FN = lambda params, _: jax.grad(quadratic)(params)


def run_steps(tx, params, steps=2):
  """The uniform loop call: update(grads, state, params, grad_fn=...)."""
  state = tx.init(params)
  for _ in range(steps):
    updates, state = tx.update(jax.grad(quadratic)(params), state, params, grad_fn=GRAD_FN)
    params = optax.apply_updates(params, updates)
  return params


@pytest.mark.parametrize("name, schedule", list(itertools.product(optim.OPTIMIZERS.names(), SCHEDULE_FIELDS)))
def test_every_optimizer_schedule_and_flag_combination_steps(name, schedule):
  params = {"w": jnp.asarray(RNG.standard_normal((3, 2)), jnp.float32), "b": jnp.ones(2)}
  combinations = list(itertools.product([False, True], repeat=3))
  optimizers = [
      optim.make_optimizer({
          "name": name, "lr": 0.1, "schedule": schedule, "perpgrad": perpgrad, "sam": sam,
          "grad_clip_norm": 1.0 if clip else None, "weight_decay": 1e-3, "momentum": 0.9,
          **SCHEDULE_FIELDS[schedule]})
      for perpgrad, sam, clip in combinations
  ]
  # One program for every flag combination: cheaper than stepping them op by op.
  results = jax.jit(lambda params: [run_steps(tx, params) for tx in optimizers])(params)
  for flags, new in zip(combinations, results):
    for before, after in zip(jax.tree.leaves(params), jax.tree.leaves(new)):
      assert np.all(np.isfinite(after)), flags
      assert not np.allclose(before, after), flags


def test_training_loop_under_jit_decreases_the_loss():
  params = {"w": jnp.asarray(RNG.standard_normal((4, 3)), jnp.float32)}
  for sam in (False, True):
    tx = optim.make_optimizer(ml_collections.ConfigDict(
        {"name": "adamw", "lr": 0.2, "schedule": "warmup_cosine", "warmup_steps": 5,
         "total_steps": 60, "sam": sam, "perpgrad": False, "grad_clip_norm": 10.0}))

    @jax.jit
    def step(params, state):
      updates, state = tx.update(jax.grad(quadratic)(params), state, params, grad_fn=GRAD_FN)
      return optax.apply_updates(params, updates), state

    p, state = params, tx.init(params)
    for _ in range(60):
      p, state = step(p, state)
    assert quadratic(p) < 0.01 * quadratic(params), sam


def test_sam_step_on_a_quadratic_matches_the_formula():
  a = jnp.array([[3.0, 0.5], [0.5, 1.0]])
  loss = lambda p: 0.5 * p["w"] @ a @ p["w"]
  grad_fn = lambda p, _: jax.grad(loss)(p)
  lr, rho = 0.1, 0.05
  tx = optim.make_optimizer({"name": "sgd", "lr": lr, "sam": True, "sam_rho": rho})
  params = {"w": jnp.array([1.0, -2.0])}
  updates, _ = tx.update(grad_fn(params, 0), tx.init(params), params, grad_fn=grad_fn)
  w = np.array([1.0, -2.0])
  g = np.asarray(a, np.float64) @ w
  adversarial = w + rho * g / np.linalg.norm(g)
  np.testing.assert_allclose(updates["w"], -lr * np.asarray(a, np.float64) @ adversarial, rtol=1e-6)
  # A zero gradient stays a zero step (optax's own normalize would give NaN).
  zero, _ = tx.update({"w": jnp.zeros(2)}, tx.init(params), {"w": jnp.zeros(2)}, grad_fn=grad_fn)
  np.testing.assert_array_equal(zero["w"], 0.0)
  with pytest.raises(ValueError, match="grad_fn must be provided"):
    tx.update(grad_fn(params, 0), tx.init(params), params)


def test_weight_decay_semantics():
  params = {"w": jnp.array([1.0, -2.0, 0.5])}
  grads = {"w": jnp.array([0.1, 0.2, -0.3])}
  for name, want in [("sgd", optax.sgd(0.1)), ("adam", optax.adam(0.1))]:
    tx = optim.make_optimizer({"name": name, "lr": 0.1, "weight_decay": 0.01})
    got, _ = tx.update(grads, tx.init(params), params)
    l2 = {"w": grads["w"] + 0.01 * params["w"]}  # coupled: decay added to the gradient
    expected, _ = want.update(l2, want.init(params), params)
    np.testing.assert_allclose(got["w"], expected["w"], rtol=1e-6)
  tx = optim.make_optimizer({"name": "adamw", "lr": 0.1, "weight_decay": 0.01})
  got, _ = tx.update(grads, tx.init(params), params)
  adamw = optax.adamw(0.1, weight_decay=0.01)
  expected, _ = adamw.update(grads, adamw.init(params), params)
  np.testing.assert_allclose(got["w"], expected["w"], rtol=1e-6)


def test_sgd_momentum_and_nesterov():
  params, grads = {"w": jnp.ones(2)}, {"w": jnp.array([1.0, 2.0])}
  tx = optim.make_optimizer({"name": "sgd", "lr": 0.1, "momentum": 0.9, "nesterov": True})
  want = optax.sgd(0.1, momentum=0.9, nesterov=True)
  state, want_state = tx.init(params), want.init(params)
  for _ in range(3):
    got, state = tx.update(grads, state, params)
    expected, want_state = want.update(grads, want_state, params)
    np.testing.assert_allclose(got["w"], expected["w"], rtol=1e-6)


def test_schedules():
  lr = 0.5
  cosine = optim.make_schedule({"name": "adamw", "lr": lr, "schedule": "warmup_cosine",
                                "warmup_steps": 10, "total_steps": 110})
  np.testing.assert_allclose([cosine(0), cosine(5), cosine(10), cosine(60), cosine(110)],
                             [0.0, lr / 2, lr, lr / 2, 0.0], atol=1e-6)
  step = optim.make_schedule({"name": "sgd", "lr": lr, "schedule": "step", "boundaries": [50, 75]})
  np.testing.assert_allclose([step(0), step(49), step(50), step(74), step(75), step(1000)],
                             [lr, lr, lr / 10, lr / 10, lr / 100, lr / 100], rtol=1e-6)
  warm = optim.make_schedule({"name": "sgd", "lr": lr, "warmup_steps": 4})
  np.testing.assert_allclose([warm(0), warm(2), warm(4), warm(100)], [0.0, lr / 2, lr, lr], rtol=1e-6)
  constant = optim.make_schedule(ml_collections.ConfigDict({"name": "adam", "lr": lr}))
  assert float(constant(12345)) == lr


def test_defaults_are_documented_adam_betas():
  assert (optim.DEFAULTS["b1"], optim.DEFAULTS["b2"], optim.DEFAULTS["eps"]) == (0.9, 0.999, 1e-8)
  params, grads = {"w": jnp.ones(3)}, {"w": jnp.array([0.1, -0.2, 0.3])}
  tx = optim.make_optimizer({"name": "adam", "lr": 0.1})
  want = optax.adam(0.1)
  state, want_state = tx.init(params), want.init(params)
  for _ in range(3):
    got, state = tx.update(grads, state, params)
    expected, want_state = want.update(grads, want_state, params)
  np.testing.assert_allclose(got["w"], expected["w"], rtol=1e-6)


@pytest.mark.parametrize(
    "config, message",
    [
        ({"lr": 0.1}, "optimizer.name is required"),
        ({"name": "adamw"}, "optimizer.lr is required"),
        ({"name": "lion", "lr": 0.1}, "optimizer.name='lion' is not valid; valid: adam, adamw, sgd"),
        ({"name": "sgd", "lr": 0.1, "schedule": "linear"},
         "optimizer.schedule='linear' is not valid; valid: constant, step, warmup_cosine"),
        ({"name": "sgd", "lr": 0.1, "schedule": "warmup_cosine"}, "optimizer.total_steps must be an integer"),
        ({"name": "sgd", "lr": 0.1, "schedule": "warmup_cosine", "warmup_steps": 10, "total_steps": 10},
         r"above optimizer.warmup_steps \(10\)"),
        ({"name": "sgd", "lr": 0.1, "schedule": "step"}, "optimizer.boundaries must be increasing positive integers"),
        ({"name": "sgd", "lr": 0.1, "schedule": "step", "boundaries": [75, 50]}, "optimizer.boundaries must be"),
        ({"name": "sgd", "lr": 0.1, "learning_rate": 0.1}, "unknown field optimizer.learning_rate; valid: name, lr, "),
        ({"name": "sgd", "lr": -1.0}, "optimizer.lr must be a number > 0, got -1.0"),
        ({"name": "sgd", "lr": "fast"}, "optimizer.lr must be a number > 0, got 'fast'"),
        ({"name": "adam", "lr": 0.1, "b2": 1.0}, r"optimizer.b2 must be a number in \[0, 1\)"),
        ({"name": "sgd", "lr": 0.1, "grad_clip_norm": 0.0}, "optimizer.grad_clip_norm must be a number > 0 or None"),
        ({"name": "sgd", "lr": 0.1, "nesterov": True}, "optimizer.nesterov needs optimizer.momentum > 0"),
        ({"name": "sgd", "lr": 0.1, "sam": True, "sam_rho": 0.0}, "optimizer.sam_rho must be a number > 0"),
        ([("name", "sgd")], "optimizer config must be a ConfigDict or a mapping, got list"),
        ({"name": "adam", "lr": 1e39}, r"optimizer.lr=1e\+39 is not finite in float32"),
        ({"name": "adam", "lr": float("inf")}, "optimizer.lr=inf is not finite in float32"),
        ({"name": "adam", "lr": 1e-50}, r"optimizer.lr must be a number > 0, got 1e-50 \(0.0 in float32\)"),
        ({"name": "adam", "lr": 0.1, "b2": 0.99999999},
         r"optimizer.b2 must be a number in \[0, 1\), got 0.99999999 \(1.0 in float32\)"),
    ],
)
def test_config_errors_name_the_field(config, message):
  with pytest.raises(ValueError, match=message):
    optim.make_optimizer(config)


def test_numbers_are_checked_in_the_dtype_python_floats_take():
  # float32 by default (above); with x64 on, 1e39 and 0.99999999 are what they say.
  with jax.enable_x64(True):
    optim.make_optimizer({"name": "adam", "lr": 1e39, "b2": 0.99999999})
    with pytest.raises(ValueError, match="optimizer.lr=inf is not finite in float64"):
      optim.make_optimizer({"name": "adam", "lr": float("inf")})
