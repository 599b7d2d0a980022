"""Pair-wise Circle, ElasticFace-Cos / +, Unicom, UNPG, MadaCos, NBC-Softmax, CR-FIQA against
float64 NumPy (or the released code's rule); special cases."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import special

from softlab.losses import margin as M
from fast_jit import jit

RNG = np.random.default_rng(1)
N, C, D = 8, 10, 6
COS = RNG.uniform(-0.9, 0.9, (N, C))
LABELS = RNG.integers(0, C, N).astype(np.int32)
EMB = RNG.standard_normal((N, D))
PAIR_LABELS = np.array([0, 0, 1, 1, 1, 2, 3, 3], np.int32)
KEY = jax.random.key(5)


def ref_cross_entropy(logits, y):
  z = logits - logits.max()
  return np.log(np.exp(z).sum()) - z[y]


def ref_circle(similarities, positive, negative, m, gamma):
  """Eq. 6 of arXiv:2002.10857, one anchor, float64."""
  s_p, s_n = similarities[positive], similarities[negative]
  if not len(s_p) or not len(s_n):
    return 0.0
  a_p, a_n = np.maximum(1 + m - s_p, 0), np.maximum(s_n + m, 0)
  log_inner = (special.logsumexp(gamma * a_n * (s_n - m))
               + special.logsumexp(-gamma * a_p * (s_p - 1 + m)))
  return np.logaddexp(0, log_inner)


def test_pairwise_circle_loss_matches_numpy(x64):
  m, gamma = 0.25, 16.0
  unit = EMB / np.linalg.norm(EMB, axis=1, keepdims=True)
  similarity = unit @ unit.T
  where = np.ones(N, bool)
  where[-1] = False
  want = []
  for i in range(N):
    others = where & (np.arange(N) != i)
    same = PAIR_LABELS == PAIR_LABELS[i]
    value = ref_circle(similarity[i], others & same, others & ~same, m, gamma)
    want.append(value if where[i] else 0.0)
  got = jit(functools.partial(M.pairwise_circle_loss, m=m, gamma=gamma))(
      EMB, PAIR_LABELS, where=where)
  np.testing.assert_allclose(got, want, rtol=1e-10)


def test_circle_pairs_with_centers_as_pairs_is_the_proxy_circle_loss(x64):
  target = np.arange(C) == LABELS[:, None]
  got = jit(lambda c: (M.circle_pairs(c, target, ~target), M.circle_loss(c, LABELS)))(COS)
  np.testing.assert_allclose(got[0], got[1], rtol=1e-10)
  want = [ref_circle(COS[i], target[i], ~target[i], 0.25, 256.0) for i in range(N)]
  np.testing.assert_allclose(got[0], want, rtol=1e-10)


def test_pairwise_circle_gradient_treats_the_weights_as_constants(x64):
  """d/ds_n of eq. 6 with a_n fixed: gamma a_n exp(...) / (1 + inner) (self-paced weights)."""
  grad = jit(jax.grad(lambda s: M.circle_pairs(s, POS, NEG, m=0.25, gamma=4.0)[0]))(SIM)
  s = SIM[0]
  a_p, a_n = np.maximum(1.25 - s, 0), np.maximum(s + 0.25, 0)
  e_n, e_p = np.exp(4 * a_n * (s - 0.25)) * NEG[0], np.exp(-4 * a_p * (s - 0.75)) * POS[0]
  inner = e_n.sum() * e_p.sum()
  want = np.where(NEG[0], 4 * a_n * e_n * e_p.sum(), -4 * a_p * e_p * e_n.sum()) / (1 + inner)
  np.testing.assert_allclose(grad[0], want, rtol=1e-9)


SIM = RNG.uniform(-0.5, 0.9, (1, 5))
POS = np.array([[True, True, False, False, False]])
NEG = ~POS


def ref_elastic(cos, labels, margins, plus, arc, s):
  if plus:  # the k-th largest target cosine gets the k-th smallest margin
    order = np.argsort(-cos[np.arange(len(labels)), labels], kind="stable")
    sorted_margins = np.sort(margins)
    margins = np.empty_like(margins)
    margins[order] = sorted_margins
  out = []
  for i, y in enumerate(labels):
    logits = s * cos[i].copy()
    theta = np.arccos(cos[i, y])
    logits[y] = s * (np.cos(theta + margins[i]) if arc else cos[i, y] - margins[i])
    out.append(ref_cross_entropy(logits, y))
  return np.array(out)


@pytest.mark.parametrize("plus", [False, True])
@pytest.mark.parametrize("arc", [False, True])
def test_elasticface_cos_arc_and_plus_match_numpy(x64, plus, arc):
  cos = np.clip(COS, -0.5, 0.9)  # theta + m < pi: no fallback branch
  # Default sigma: the paper's 0.05; "+": fdbtrs/ElasticFace config/config.py's 0.0175 / 0.02.
  fn, m, sigma = (M.elasticface, 0.5, 0.0175 if plus else 0.05) if arc else (
      M.elasticface_cos, 0.35, 0.02 if plus else 0.05)
  margins = m + sigma * np.asarray(jax.random.normal(KEY, (N,), jnp.float64))
  got = jit(functools.partial(fn, key=KEY, s=16.0, plus=plus))(cos, LABELS)
  np.testing.assert_allclose(got, ref_elastic(cos, LABELS, margins, plus, arc, 16.0),
                             rtol=1e-9)


def test_elastic_plus_gives_harder_examples_larger_margins():
  target = jnp.asarray(RNG.uniform(-1, 1, 64), jnp.float32)
  margins = M._elastic_margins(KEY, target, 0.35, 0.05, True)
  order = np.argsort(np.asarray(target))
  assert np.all(np.diff(np.asarray(margins)[order]) <= 0)


def test_elastic_zero_spread_is_cosface_and_arcface():
  got = jit(lambda c: (M.elasticface_cos(c, LABELS, key=KEY, sigma=0.0, plus=True),
                       M.cosface(c, LABELS),
                       M.elasticface(c, LABELS, key=KEY, sigma=0.0, plus=True),
                       M.arcface(c, LABELS)))(COS.astype(np.float32))
  np.testing.assert_allclose(got[0], got[1], rtol=1e-6)
  np.testing.assert_allclose(got[2], got[3], rtol=1e-6)


CENTERS = RNG.standard_normal((C, D)).astype(np.float32)


def test_unicom_at_feature_rate_one_is_partial_fc():
  emb = EMB.astype(np.float32)
  got = jit(lambda e, c: (M.unicom(e, LABELS, c, key=KEY, feature_rate=1.0, sample_rate=0.5),
                          M.partial_fc(e, LABELS, c, key=KEY, sample_rate=0.5)))(emb, CENTERS)
  np.testing.assert_allclose(got[0], got[1], rtol=1e-6)


def test_unicom_is_partial_fc_on_the_sampled_dimensions():
  emb = EMB.astype(np.float32)
  got = jit(lambda e, c: M.unicom(e, LABELS, c, key=KEY, feature_rate=0.5, sample_rate=1.0))(
      emb, CENTERS)
  dims = np.sort(np.asarray(jax.lax.top_k(
      jax.random.uniform(jax.random.fold_in(KEY, 1), (D,)), 3)[1]))
  unit = lambda z: z / np.linalg.norm(z, axis=-1, keepdims=True)
  cos = unit(EMB[:, dims]) @ unit(CENTERS[:, dims].astype(np.float64)).T
  want = [ref_cross_entropy(64 * np.where(np.arange(C) == y, np.cos(np.arccos(cos[i, y]) + 0.5),
                                          cos[i]), y) if np.arccos(cos[i, y]) + 0.5 < np.pi
          else np.nan for i, y in enumerate(LABELS)]
  finite = np.isfinite(want)
  np.testing.assert_allclose(np.asarray(got)[finite], np.asarray(want)[finite], rtol=1e-4)
  assert finite.sum() >= N // 2


def test_cr_fiqa_matches_numpy(x64):
  quality = RNG.uniform(0, 1.5, N)
  got = jit(functools.partial(M.cr_fiqa, s=16.0, alpha=10.0, beta=0.5))(COS, LABELS,
                                                                       quality=quality)
  want = []
  for i, y in enumerate(LABELS):
    logits = 16.0 * COS[i].copy()
    logits[y] = 16.0 * np.cos(np.arccos(COS[i, y]) + 0.5)
    if np.arccos(COS[i, y]) + 0.5 >= np.pi:
      logits[y] = 16.0 * (COS[i, y] - 0.5 * np.sin(0.5))
    ratio = COS[i, y] / (np.max(np.delete(COS[i], y)) + 1 + 1e-9)
    gap = abs(quality[i] - ratio)
    smooth = 0.5 * gap**2 / 0.5 if gap < 0.5 else gap - 0.25
    want.append(ref_cross_entropy(logits, y) + 10.0 * smooth)
  np.testing.assert_allclose(got, want, rtol=1e-9)


def test_cr_fiqa_regresses_the_ratio_without_moving_the_cosines(x64):
  quality = RNG.uniform(0, 1.5, N)
  loss = lambda c, q: jnp.sum(M.cr_fiqa(c, LABELS, quality=q) - M.arcface(c, LABELS))
  grad_cos, grad_quality = jit(jax.grad(loss, argnums=(0, 1)))(COS, quality)
  np.testing.assert_allclose(grad_cos, 0, atol=1e-12)
  assert np.all(np.abs(grad_quality) > 0)


def ref_box_and_whisker(similarity, labels, where, wisk):
  """Released UNPG rule: negative pairs i < j, keep those within the whiskers."""
  values = [similarity[i, j] for i in range(len(labels)) for j in range(i + 1, len(labels))
            if where[i] and where[j] and labels[i] != labels[j]]
  ordered = np.sort(values)
  q1, q3 = ordered[int(0.25 * len(ordered))], ordered[int(0.75 * len(ordered))]
  low, high = q1 - wisk * (q3 - q1), q3 + wisk * (q3 - q1)
  return ordered[(ordered >= low) & (ordered <= high)]


def test_unpg_matches_numpy(x64):
  embeddings = RNG.standard_normal((N, D))
  embeddings[3] = -embeddings[2] + 0.01  # an outlying (noisy) negative pair
  where = np.ones(N, bool)
  where[-1] = False
  unit = embeddings / np.linalg.norm(embeddings, axis=1, keepdims=True)
  kept = ref_box_and_whisker(unit @ unit.T, PAIR_LABELS, where, 0.1)
  s = 8.0
  want = []
  for i, y in enumerate(PAIR_LABELS):
    logits = s * COS[i].copy()
    logits[y] = s * np.cos(np.arccos(COS[i, y]) + 0.5) if np.arccos(COS[i, y]) + 0.5 < np.pi \
        else s * (COS[i, y] - 0.5 * np.sin(0.5))
    want.append(special.logsumexp(np.concatenate([logits, s * kept])) - logits[y])
  got = jit(functools.partial(M.unpg, s=s, wisk=0.1))(COS, PAIR_LABELS, embeddings=embeddings,
                                                      where=where)
  np.testing.assert_allclose(got, np.where(where, want, 0), rtol=1e-10)  # padding: 0
  total = sum(1 for i in range(N) for j in range(i + 1, N)
              if where[i] and where[j] and PAIR_LABELS[i] != PAIR_LABELS[j])
  assert 0 < len(kept) < total  # the filter removed some pairs


def test_unpg_without_negative_pairs_is_its_base_loss():
  same = np.zeros(N, np.int32)
  got = jit(lambda c, e: (M.unpg(c, same, embeddings=e), M.arcface(c, same)))(
      COS.astype(np.float32), EMB.astype(np.float32))
  np.testing.assert_allclose(got[0], got[1], rtol=1e-6)


def test_madacos_matches_the_released_rule(x64):
  where = np.ones(N, bool)
  where[0] = False
  target = COS[np.arange(N), LABELS]
  real = np.flatnonzero(where)
  order = real[np.argsort(target[real], kind="stable")]
  middle = order[(len(real) - 1) // 2]  # torch.median: the lower middle value
  median, rho = target[middle], 0.02
  scale = max(np.log(9999999 * (1 - rho) / rho) / (1 - median), 32.0)
  others = np.delete(scale * COS[middle], LABELS[middle])
  margin = max(median - (special.logsumexp(others) + np.log(rho / (1 - rho))) / scale, 0)
  want = []
  for i, y in enumerate(LABELS):
    logits = scale * COS[i].copy()
    logits[y] = scale * (COS[i, y] - margin)
    want.append(ref_cross_entropy(logits, y))
  got = jit(M.madacos)(COS, LABELS, where=where)
  np.testing.assert_allclose(got, np.where(where, want, 0), rtol=1e-10)  # padding: 0


def test_madacos_scale_and_margin_are_not_differentiated(x64):
  """d loss / d cos = s (softmax - onehot) with s, m held fixed (the released backward)."""
  loss = lambda c: jnp.sum(M.madacos(c, LABELS))
  grad = jit(jax.grad(loss))(COS)
  target = COS[np.arange(N), LABELS]
  median = np.sort(target)[(N - 1) // 2]
  scale = max(np.log(9999999 * 0.98 / 0.02) / (1 - median), 32.0)
  values = jit(M.madacos)(COS, LABELS)
  # softmax of the loss's logits, recovered from the values: p_y = exp(-L)
  p_target = np.exp(-np.asarray(values))
  np.testing.assert_allclose(grad[np.arange(N), LABELS], scale * (p_target - 1), rtol=1e-8)


def test_nbc_softmax_matches_the_released_term(x64):
  embeddings = RNG.standard_normal((N, D))
  where = np.ones(N, bool)
  where[-1] = False
  classes = sorted(set(PAIR_LABELS[where]))
  centroids = np.stack([embeddings[where & (PAIR_LABELS == k)].mean(0) for k in classes])
  unit = centroids / np.linalg.norm(centroids, axis=1, keepdims=True)
  distances = (unit @ unit.T) * (1 - np.eye(len(classes)))
  block = np.mean(np.log(np.exp(0.2 * distances).sum(1))) / C
  base = []
  for i, y in enumerate(PAIR_LABELS):
    base.append(ref_cross_entropy(16.0 * COS[i], y))
  want = np.where(where, 0.7 * np.array(base) + 0.3 * block, 0)
  got = jit(functools.partial(M.nbc_softmax, s=16.0, weight=0.3))(
      COS, PAIR_LABELS, embeddings=embeddings, where=where)
  np.testing.assert_allclose(got, want, rtol=1e-10)


def test_nbc_softmax_at_weight_zero_is_normalized_softmax():
  got = jit(lambda c, e: (M.nbc_softmax(c, PAIR_LABELS, embeddings=e, weight=0.0),
                          M.normalized_softmax(c, PAIR_LABELS)))(COS.astype(np.float32),
                                                                 EMB.astype(np.float32))
  np.testing.assert_allclose(got[0], got[1], rtol=1e-6)


def test_adaface_stateful_updates_the_statistics_on_real_examples_first(x64):
  norms = RNG.uniform(5, 40, N)
  where = np.arange(N) < N - 2
  stateful = M.adaface_stateful(m=0.4)
  state = stateful.init(N, jnp.float64)
  values, new = jit(lambda c, n, w: stateful.apply(c, LABELS, state, jnp.arange(N), norms=n,
                                                   where=w))(COS, norms, where)
  kept = norms[where]
  mean = 0.01 * kept.mean() + 0.99 * 20.0
  std = 0.01 * kept.std(ddof=1) + 0.99 * 100.0
  np.testing.assert_allclose([new["norm_mean"], new["norm_std"]], [mean, std], rtol=1e-12)
  want = jit(lambda c, n: M.adaface(c, LABELS, n, batch_mean=mean, batch_std=std))(COS, norms)
  np.testing.assert_allclose(values, want, rtol=1e-12)


def test_adaface_reference_clamp_matches_the_released_head(x64):
  """head.py: every cosine clamped to [-1 + 1e-3, 1 - 1e-3] before arccos and the angle clip."""
  cos = COS.copy()
  cos[:, 0] = 0.99995  # non-target cosines near 1 (labels avoid class 0 below)
  labels = np.maximum(LABELS, 1)
  norms = RNG.uniform(5, 40, N)
  got = jit(lambda c: M.adaface(c, labels, norms, batch_mean=20.0, batch_std=10.0, s=16.0,
                                reference_clamp=True))(cos)
  eps, m, h = 1e-3, 0.4, 0.333
  clamped = np.clip(cos, -1 + eps, 1 - eps)
  z = np.clip(h * (np.clip(norms, 1e-3, 100) - 20.0) / (10.0 + eps), -1, 1)
  want = []
  for i, y in enumerate(labels):
    logits = 16.0 * clamped[i].copy()
    theta = np.clip(np.arccos(clamped[i, y]) - m * z[i], eps, np.pi - eps)
    logits[y] = 16.0 * (np.cos(theta) - (m + m * z[i]))
    want.append(ref_cross_entropy(logits, y))
  np.testing.assert_allclose(got, want, rtol=1e-10)
  plain = jit(lambda c: M.adaface(c, labels, norms, batch_mean=20.0, batch_std=10.0, s=16.0))(cos)
  assert not np.allclose(plain, got)


def test_partial_fc_gives_its_inner_loss_the_inputs_it_registered():
  """At sample_rate 1 Partial FC is its inner loss on all cosines, fed the key (folded
  with 2), the embeddings and the per-example mask the inner loss registered."""
  emb = EMB.astype(np.float32)
  where = np.arange(N) < 6
  inner_key = jax.random.fold_in(KEY, 2)
  assert M.margin_inputs("partial_fc", {"margin_loss": "elasticface"}) == (
      "embeddings", "labels", "centers", "key")
  assert M.margin_inputs("unicom", {"margin_loss": "unpg"})[-1] == "where"
  assert M.margin_inputs("partial_fc") == ("embeddings", "labels", "centers", "key")

  def both(e, c):
    cos = M.cosine_logits(e, c)
    pfc = functools.partial(M.partial_fc, e, LABELS, c, key=KEY, sample_rate=1.0)
    return (pfc(margin_loss="elasticface"), M.elasticface(cos, LABELS, key=inner_key, sigma=0.05),
            pfc(margin_loss="unpg", where=where),
            M.unpg(cos, LABELS, embeddings=e, where=where),
            pfc(margin_loss="cr_fiqa", quality=quality), M.cr_fiqa(cos, LABELS, quality=quality))

  quality = np.linspace(0, 1, N, dtype=np.float32)
  got = jit(both)(emb, CENTERS)
  for pfc_value, inner_value in zip(got[::2], got[1::2]):
    np.testing.assert_allclose(pfc_value, inner_value, rtol=1e-5)


@pytest.mark.parametrize("call, message", [
    (lambda: M.margin_inputs("partial_fc", {"margin_loss": "adaface"}),
     "'adaface' cannot run inside Partial FC.*valid: .*elasticface"),
    (lambda: M.margin_inputs("partial_fc", {"margin_loss": "unicom"}), "cannot run inside"),
    (lambda: M.partial_fc(EMB, LABELS, CENTERS, key=KEY, margin_loss="unpg"),
     r"takes the inner inputs \['where'\], got none"),
    (lambda: M.partial_fc(EMB, LABELS, CENTERS, key=KEY, where=np.ones(N, bool)),
     r"takes the inner inputs none, got \['where'\]"),
])
def test_partial_fc_inner_loss_errors(call, message):
  with pytest.raises(ValueError, match=message):
    call()
