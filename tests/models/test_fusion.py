"""Reliability-aware attention against a second implementation (a per-modality loop), masks,
the pre-LN block's causal masking, and the TMC / QMF fusion pieces against hand formulas."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import special

from imro_jax.models import energy, evidential
from imro_jax.models.fusion import ReliabilityAwareAttention, normalise_confidence, uniform_weights
from imro_jax.models.transformer import MultiHeadAttention, TransformerBlock

B, M, F, N, D, H = 3, 3, 2, 5, 8, 2


@pytest.fixture(scope="module")
def fusion_setup():
    rng = np.random.default_rng(0)
    queries = jnp.asarray(rng.normal(size=(B, F, D)), jnp.float32)
    tokens = jnp.asarray(rng.normal(size=(B, M, N, D)), jnp.float32)
    lengths = np.array([[5, 2, 3], [1, 5, 4], [3, 3, 1]])  # real tokens per (sample, modality)
    token_mask = jnp.asarray(np.arange(N)[None, None] < lengths[..., None])
    module = ReliabilityAwareAttention(H, D)
    params = module.init(jax.random.key(0), queries, tokens, token_mask, jnp.full((B, M), 1 / M))
    return module, params, queries, tokens, token_mask


def loop_attention(params, queries, tokens, token_mask):
    """Second implementation: Attention(Q, K_m, V_m) for each modality separately, [M, B, F, D]."""
    attn = MultiHeadAttention(H, D)
    attn_params = {"params": params["params"]["attention"]}
    return jnp.stack([
        attn.apply(attn_params, queries, tokens[:, m], token_mask[:, m][:, None, None, :])
        for m in range(M)
    ])


def test_uniform_reliability_is_papers_conventional_fusion(fusion_setup):
    module, params, queries, tokens, token_mask = fusion_setup
    per_modality = loop_attention(params, queries, tokens, token_mask)
    fused = module.apply(params, queries, tokens, token_mask, jnp.full((B, M), 1 / M))
    # Paper Sec. 2.1: Z = sum_m Attention(Q, K_m, V_m); R = 1/M gives exactly Z / M.
    np.testing.assert_allclose(fused * M, per_modality.sum(0), rtol=1e-5, atol=1e-5)


def test_arbitrary_reliability_weights_each_modality(fusion_setup):
    module, params, queries, tokens, token_mask = fusion_setup
    r = jax.nn.softmax(jnp.asarray(np.random.default_rng(1).normal(size=(B, M))), -1)
    fused = module.apply(params, queries, tokens, token_mask, r)
    expected = jnp.einsum("bm,mbfd->bfd", r, loop_attention(params, queries, tokens, token_mask))
    np.testing.assert_allclose(fused, expected, rtol=1e-5, atol=1e-5)


def test_padded_tokens_and_zero_weight_modalities_cannot_change_output(fusion_setup):
    module, params, queries, tokens, token_mask = fusion_setup
    r = jnp.asarray([[0.5, 0.5, 0.0], [0.2, 0.0, 0.8], [1.0, 0.0, 0.0]])
    base = module.apply(params, queries, tokens, token_mask, r)
    garbage = jnp.asarray(np.random.default_rng(2).normal(scale=100.0, size=tokens.shape), jnp.float32)
    padded = jnp.where(token_mask[..., None], tokens, garbage)
    np.testing.assert_allclose(module.apply(params, queries, padded, token_mask, r), base, rtol=1e-6, atol=1e-6)
    zero_weight = (r == 0)[:, :, None, None]
    perturbed = jnp.where(zero_weight, garbage, tokens)
    np.testing.assert_allclose(module.apply(params, queries, perturbed, token_mask, r), base, rtol=1e-6, atol=1e-6)
    # ... whereas a weighted modality's real token does change it (the test can fail).
    moved = tokens.at[0, 0, 0].add(1.0)
    assert not np.allclose(module.apply(params, queries, moved, token_mask, r)[0], base[0])


def test_transformer_block_causal_and_padding_masks():
    rng = np.random.default_rng(3)
    x = jnp.asarray(rng.normal(size=(2, 6, D)), jnp.float32)
    mask = jnp.asarray(np.arange(6)[None] < np.array([[6], [4]]))
    block = TransformerBlock(H, 16, 0.0, causal=True)
    params = block.init(jax.random.key(1), x, mask, train=False)
    base = block.apply(params, x, mask, train=False)
    later = x.at[:, 3:].add(5.0)  # change positions >= 3 (and sample 1's padding 4, 5)
    out = block.apply(params, later, mask, train=False)
    np.testing.assert_allclose(out[:, :3], base[:, :3], rtol=1e-5, atol=1e-5)
    assert not np.allclose(out[:, 3], base[:, 3])
    # Non-causal: padded positions of sample 1 cannot change its real positions.
    block = TransformerBlock(H, 16, 0.0)
    base = block.apply(params, x, mask, train=False)
    out = block.apply(params, x.at[1, 4:].set(50.0), mask, train=False)
    np.testing.assert_allclose(out[1, :4], base[1, :4], rtol=1e-5, atol=1e-5)


def test_uniform_weights_and_confidence_normalisation():
    present = jnp.asarray([[True, True, False], [False, False, False], [True, True, True]])
    np.testing.assert_allclose(uniform_weights(present), [[0.5, 0.5, 0], [0, 0, 0], [1 / 3] * 3])
    conf = jnp.asarray([[2.0, 6.0, 9.0], [1.0, 1.0, 1.0], [-1.0, -2.0, -3.0]])
    np.testing.assert_allclose(normalise_confidence(conf, present), [[0.25, 0.75, 0], [0, 0, 0], [1 / 3] * 3])


# ---- TMC: reduced Dempster-Shafer combination, written out independently ----

def ds_reference(alpha1, alpha2):
    k = len(alpha1)
    s1, s2 = alpha1.sum(), alpha2.sum()
    b1, b2, u1, u2 = (alpha1 - 1) / s1, (alpha2 - 1) / s2, k / s1, k / s2
    conflict = sum(b1[i] * b2[j] for i, j in itertools.product(range(k), range(k)) if i != j)
    b = np.array([(b1[i] * b2[i] + b1[i] * u2 + b2[i] * u1) / (1 - conflict) for i in range(k)])
    u = u1 * u2 / (1 - conflict)
    np.testing.assert_allclose(b.sum() + u, 1.0, rtol=1e-10)  # opinions stay normalised
    return b * (k / u) + 1


def test_ds_combination_matches_hand_formula_and_absent_view_is_identity():
    rng = np.random.default_rng(4)
    alpha = rng.gamma(2.0, 2.0, size=(2, 3, 4)) + 1.0  # [B, M, K]
    got = np.asarray(evidential.combine_opinions(jnp.asarray(alpha)))
    for b in range(2):
        expected = ds_reference(ds_reference(alpha[b, 0], alpha[b, 1]), alpha[b, 2])
        np.testing.assert_allclose(got[b], expected, rtol=1e-4)
    # Zero evidence (b = 0, u = 1) is the identity of the rule: an absent view changes nothing.
    logits = jnp.asarray(rng.normal(size=(2, 3, 4)))
    present = jnp.asarray([[True, False, True], [True, True, True]])
    with_absent = evidential.combine_opinions(evidential.dirichlet_from_logits(logits, present))
    only_present = evidential.combine_opinions(evidential.dirichlet_from_logits(logits[:1, ::2]))
    np.testing.assert_allclose(with_absent[0], only_present[0], rtol=1e-5)


def test_evidential_loss_matches_scipy_formula():
    rng = np.random.default_rng(5)
    alpha = rng.gamma(2.0, 2.0, size=(4, 3)) + 1.0
    label = np.array([0, 2, 1, 1])
    for annealing in (0.0, 0.3):
        got = np.asarray(evidential.evidential_loss(jnp.asarray(alpha), jnp.asarray(label), annealing))
        for i in range(4):
            y = np.eye(3)[label[i]]
            s = alpha[i].sum()
            ce = np.sum(y * (special.digamma(s) - special.digamma(alpha[i])))
            a = y + (1 - y) * alpha[i]
            # KL(Dir(a) || Dir(1)) from the Dirichlet log-normalisers and E[log p].
            kl = (special.gammaln(a.sum()) - special.gammaln(a).sum() - special.gammaln(3.0)
                  + np.sum((a - 1) * (special.digamma(a) - special.digamma(a.sum()))))
            np.testing.assert_allclose(got[i], ce + annealing * kl, rtol=1e-4)


# ---- QMF: energy confidence, fusion and the ranking loss ----

def test_energy_fusion_and_rank_loss_by_hand():
    logits = jnp.asarray([[[1.0, 2.0], [0.0, 0.0]], [[3.0, -1.0], [1.0, 1.0]]])  # [B=2, M=2, C=2]
    present = jnp.asarray([[True, False], [True, True]])
    conf = np.log(np.exp(np.asarray(logits)).sum(-1)) / 10.0
    np.testing.assert_allclose(energy.energy_confidence(logits), conf, rtol=1e-6)
    expected = np.stack([conf[0, 0] * np.asarray(logits)[0, 0],
                         conf[1, 0] * np.asarray(logits)[1, 0] + conf[1, 1] * np.asarray(logits)[1, 1]])
    np.testing.assert_allclose(energy.energy_fusion(logits, present), expected, rtol=1e-6)
    # 3 samples, losses 0, 1, 2 -> normalised 0, .5, 1; pairs (0,1), (1,2), (2,0).
    confidence = jnp.asarray([0.2, 0.9, 0.5])
    loss = jnp.asarray([0.0, 1.0, 2.0])
    pairs = [(-1, 0.5, 0.2 - 0.9), (-1, 0.5, 0.9 - 0.5), (1, 1.0, 0.5 - 0.2)]
    expected = np.mean([max(0.0, t * d - margin) for t, margin, d in pairs])
    np.testing.assert_allclose(energy.rank_loss(confidence, loss, jnp.ones(3, bool)), expected, rtol=1e-6)
    # Invalid samples drop out of every pair they are in: only pair (0, 1) is left.
    valid = jnp.asarray([True, True, False])
    np.testing.assert_allclose(energy.rank_loss(confidence, loss, valid), max(0.0, -(0.2 - 0.9) - 1.0), atol=1e-7)


def test_registry_is_the_one_table_the_spec_and_model_read():
    from imro_jax.models import registry, spec

    assert spec.FUSIONS == tuple(registry.FUSIONS)
    assert set(spec.TOKEN_FUSIONS) | set(spec.DECISION_FUSIONS) == set(registry.FUSIONS)
    for name, entry in registry.FUSIONS.items():
        assert (entry.token_weights is not None) == (entry.kind == "token"), name
        assert (entry.combine is not None) == (entry.kind == "decision"), name
    with pytest.raises(ValueError, match="model.fusion must be one of"):
        registry.get_fusion("nope")
    # A decision entry's combine is what decision_fusion applies (late = the mean of the present).
    from imro_jax.models.fusion import decision_fusion
    logits = np.arange(12, dtype=np.float32).reshape(1, 3, 4)
    fused, weights = decision_fusion("late", logits, np.array([[True, False, True]]))
    np.testing.assert_allclose(fused, (logits[0, 0] + logits[0, 2])[None] / 2)
    np.testing.assert_allclose(weights, [[0.5, 0.0, 0.5]])
