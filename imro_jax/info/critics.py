"""Critics for the MI bounds: Flax Linen modules returning ``scores[i, j] = f(x_i, y_j)``.

Every critic maps ``x: [K_x, d_x]`` and ``y: [K_y, d_y]`` to scores ``[K_x, K_y]`` (rows index
x, columns index y). With the K joint pairs ``(x_i, y_i)`` of a batch, ``K_x = K_y = K`` and the
positive pairs lie on the diagonal, as the bounds in :mod:`imro_jax.info.bounds` expect.
Defaults follow Poole et al. (2019): ReLU MLPs with 2 hidden layers of 256 units, 32-d
embeddings. The last layer of one tower (the y-embedding, the pair MLP, or the bilinear
weight) starts at zero, so an untrained critic scores every pair 0: the bounds then read 0
(NWJ: -1/e) instead of the noise of random scores, and training starts from "no dependence".
Critic parameters are small and left unannotated (replicated under a mesh).
"""

from __future__ import annotations

from collections.abc import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp


class MLP(nn.Module):
    """Plain MLP: ``num_layers`` hidden Dense layers with ``activation``, then a linear output.

    Attributes:
      hidden_dim: width of each hidden layer.
      num_layers: number of hidden layers (0 gives a linear map).
      out_dim: output width.
      activation: hidden nonlinearity.
      zero_output: initialise the output layer to zero (the MLP starts as the zero map).
    """

    hidden_dim: int = 256
    num_layers: int = 2
    out_dim: int = 32
    activation: Callable[[jax.Array], jax.Array] = nn.relu
    zero_output: bool = False

    @nn.compact
    def __call__(self, inputs: jax.Array) -> jax.Array:
        """Maps ``[..., d_in]`` to ``[..., out_dim]``."""
        hidden = inputs
        for _ in range(self.num_layers):
            hidden = self.activation(nn.Dense(self.hidden_dim)(hidden))
        kernel_init = (
            nn.initializers.zeros if self.zero_output else nn.initializers.lecun_normal()
        )
        return nn.Dense(self.out_dim, kernel_init=kernel_init)(hidden)


def _check_pair_inputs(x: jax.Array, y: jax.Array, name: str) -> None:
    """Raises ValueError unless x and y are 2-D sample matrices ``[K_x, d_x]``, ``[K_y, d_y]``."""
    if x.ndim != 2 or y.ndim != 2:
        raise ValueError(
            f"{name} expects x [K_x, d_x] and y [K_y, d_y]; got shapes {x.shape} and {y.shape}"
        )


class _TwoTowerCritic(nn.Module):
    """Shared attributes of the critics that embed x and y with one MLP tower each."""

    hidden_dim: int = 256
    num_layers: int = 2
    embed_dim: int = 32
    activation: Callable[[jax.Array], jax.Array] = nn.relu

    def tower(self, name: str, zero_output: bool = False) -> MLP:
        """An embedding MLP ``[..., d] -> [..., embed_dim]`` (call inside ``__call__``)."""
        return MLP(self.hidden_dim, self.num_layers, self.embed_dim, self.activation,
                   zero_output, name=name)


class SeparableCritic(_TwoTowerCritic):
    r"""Separable critic ``f(x, y) = g(x)^T h(y)`` with two MLP embeddings.

    Cheap (O(K) network evaluations for K^2 scores), the usual choice for contrastive learning.

    Attributes:
      hidden_dim: hidden width of g and h.
      num_layers: hidden layers of g and h.
      embed_dim: embedding size.
      activation: hidden nonlinearity.
    """

    @nn.compact
    def __call__(self, x: jax.Array, y: jax.Array) -> jax.Array:
        """Returns ``scores[i, j] = g(x_i) . h(y_j)``, shape ``[K_x, K_y]``."""
        _check_pair_inputs(x, y, "SeparableCritic")
        return self.tower("g")(x) @ self.tower("h", zero_output=True)(y).T


class BilinearCritic(_TwoTowerCritic):
    r"""Bilinear critic ``f(x, y) = u(x)^T W v(y)``.

    With ``embed=True`` (default) u and v are MLP embeddings of size ``embed_dim``; with
    ``embed=False`` the raw inputs are used (``x^T W y``, the critic of CPC).

    Attributes:
      hidden_dim: hidden width of the embeddings.
      num_layers: hidden layers of the embeddings.
      embed_dim: embedding size.
      activation: hidden nonlinearity.
      embed: embed the inputs first (True) or use them raw (False).
    """

    embed: bool = True

    @nn.compact
    def __call__(self, x: jax.Array, y: jax.Array) -> jax.Array:
        """Returns ``scores[i, j] = u(x_i)^T W v(y_j)``, shape ``[K_x, K_y]``."""
        _check_pair_inputs(x, y, "BilinearCritic")
        if self.embed:
            x, y = self.tower("u")(x), self.tower("v")(y)
        weight = self.param("bilinear", nn.initializers.zeros, (x.shape[-1], y.shape[-1]))
        return x @ weight @ y.T


class ConcatCritic(nn.Module):
    r"""Concatenation critic ``f(x, y) = MLP([x; y])`` evaluated on all K_x * K_y pairs.

    The most expressive critic (any function of the pair), but O(K^2) network evaluations.
    All pairs are formed by broadcasting, with no Python loop.

    Attributes:
      hidden_dim: hidden width.
      num_layers: hidden layers.
      activation: hidden nonlinearity.
    """

    hidden_dim: int = 256
    num_layers: int = 2
    activation: Callable[[jax.Array], jax.Array] = nn.relu

    @nn.compact
    def __call__(self, x: jax.Array, y: jax.Array) -> jax.Array:
        """Returns ``scores[i, j] = MLP([x_i; y_j])``, shape ``[K_x, K_y]``."""
        _check_pair_inputs(x, y, "ConcatCritic")
        num_x, num_y = x.shape[0], y.shape[0]
        pairs = jnp.concatenate(
            [
                jnp.broadcast_to(x[:, None, :], (num_x, num_y, x.shape[-1])),
                jnp.broadcast_to(y[None, :, :], (num_x, num_y, y.shape[-1])),
            ],
            axis=-1,
        )  # [K_x, K_y, d_x + d_y]
        scores = MLP(
            self.hidden_dim, self.num_layers, 1, self.activation, zero_output=True, name="f"
        )(pairs)
        return scores[..., 0]


CRITICS: dict[str, type[nn.Module]] = {
    "separable": SeparableCritic,
    "bilinear": BilinearCritic,
    "concat": ConcatCritic,
}


def make_critic(name: str, **kwargs) -> nn.Module:
    """Builds a critic by name (``"separable"``, ``"bilinear"`` or ``"concat"``).

    Args:
      name: critic type.
      **kwargs: module attributes, e.g. ``hidden_dim=64``.

    Raises:
      ValueError: for an unknown name.
    """
    if name not in CRITICS:
        raise ValueError(f"unknown critic {name!r}; expected one of {sorted(CRITICS)}")
    return CRITICS[name](**kwargs)
