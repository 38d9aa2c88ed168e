"""Critics: [K_x, K_y] scores with scores[i, j] = f(x_i, y_j), checked against explicit loops."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from imro_jax.info import BilinearCritic, ConcatCritic, SeparableCritic, make_critic


def numpy_mlp(params, inputs):
    """ReLU MLP forward pass in numpy from Flax Dense params {"Dense_0": {...}, ...}."""
    names = sorted(params, key=lambda name: int(name.split("_")[1]))
    hidden = np.asarray(inputs, np.float64)
    for index, name in enumerate(names):
        hidden = hidden @ np.asarray(params[name]["kernel"]) + np.asarray(params[name]["bias"])
        if index < len(names) - 1:
            hidden = np.maximum(hidden, 0.0)
    return hidden


def randomise(params, seed=0):
    """Replaces every parameter by N(0, 0.5^2) noise (the zero-initialised layers included)."""
    rng = np.random.default_rng(seed)
    return jax.tree.map(lambda leaf: jnp.asarray(0.5 * rng.normal(size=leaf.shape), jnp.float32),
                        params)


@pytest.fixture(scope="module")
def pairs():
    rng = np.random.default_rng(0)
    return jnp.asarray(rng.normal(size=(3, 2))), jnp.asarray(rng.normal(size=(4, 5)))


def test_concat_critic_matches_double_loop(pairs):
    x, y = pairs
    critic = ConcatCritic(hidden_dim=8)
    params = randomise(critic.init(jax.random.key(1), x, y))
    scores = critic.apply(params, x, y)
    assert scores.shape == (3, 4)
    f = params["params"]["f"]
    expected = np.array(
        [[numpy_mlp(f, np.concatenate([x[i], y[j]]))[0] for j in range(4)] for i in range(3)]
    )
    np.testing.assert_allclose(scores, expected, rtol=1e-5, atol=1e-6)


def test_separable_critic_is_embedding_inner_product(pairs):
    x, y = pairs
    critic = SeparableCritic(hidden_dim=8, embed_dim=6)
    params = randomise(critic.init(jax.random.key(2), x, y))
    scores = critic.apply(params, x, y)
    assert scores.shape == (3, 4)
    g = [numpy_mlp(params["params"]["g"], x[i]) for i in range(3)]
    h = [numpy_mlp(params["params"]["h"], y[j]) for j in range(4)]
    expected = np.array([[np.dot(g[i], h[j]) for j in range(4)] for i in range(3)])
    np.testing.assert_allclose(scores, expected, rtol=1e-5, atol=1e-6)


def test_bilinear_critic_raw_and_embedded(pairs):
    x, y = pairs
    raw = BilinearCritic(embed=False)
    params = randomise(raw.init(jax.random.key(3), x, y))
    weight = np.asarray(params["params"]["bilinear"])
    assert weight.shape == (2, 5)
    x_np, y_np = np.asarray(x), np.asarray(y)
    expected = np.array([[x_np[i] @ weight @ y_np[j] for j in range(4)] for i in range(3)])
    np.testing.assert_allclose(raw.apply(params, x, y), expected, rtol=1e-5, atol=1e-6)
    embedded = BilinearCritic(hidden_dim=8, embed_dim=4)
    params = randomise(embedded.init(jax.random.key(4), x, y))
    assert embedded.apply(params, x, y).shape == (3, 4)
    assert params["params"]["bilinear"].shape == (4, 4)


@pytest.mark.parametrize("name", ["separable", "bilinear", "concat"])
def test_untrained_critics_score_zero_and_diagonal_is_positive_pairs(name, pairs):
    x, _ = pairs
    critic = make_critic(name, hidden_dim=8)
    params = critic.init(jax.random.key(5), x, x)
    np.testing.assert_array_equal(critic.apply(params, x, x), 0.0)
    # Orientation: the diagonal of f(x, x) holds f(x_i, x_i) for a trained-looking critic.
    params = randomise(params)
    scores = critic.apply(params, x, x)
    single = [critic.apply(params, x[i : i + 1], x[i : i + 1])[0, 0] for i in range(3)]
    np.testing.assert_allclose(jnp.diagonal(scores), single, rtol=1e-5, atol=1e-6)


def test_critic_errors():
    with pytest.raises(ValueError, match="unknown critic"):
        make_critic("quadratic")
    critic = SeparableCritic(hidden_dim=4, embed_dim=2)
    with pytest.raises(ValueError, match=r"\[K_x, d_x\]"):
        critic.init(jax.random.key(0), jnp.zeros(3), jnp.zeros((3, 2)))
