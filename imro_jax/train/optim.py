"""The Optax chain built from `config.optimizer`.

    updates = AdamW(clip_by_global_norm(g, c); lr(t), b1, b2, eps, wd * mask)
    lr(t)   = peak * t / warmup                                   for t < warmup
            = end + (peak - end) * (1 + cos(pi * (t - warmup) / (T - warmup))) / 2   after

with `end = peak * end_learning_rate_ratio` and `T` the number of optimizer updates. Weight decay
is masked off norms and biases (1-D parameters and leaves named "bias"/"scale"). With
`accumulation_steps = k > 1` the chain is wrapped in `optax.MultiSteps`: gradients of `k`
consecutive micro-batches are averaged and the update is applied once every `k` train steps.
"""

import jax
import ml_collections
import optax

from imro_jax.train.config import ConfigError

NO_DECAY_NAMES = frozenset({"bias", "scale"})


def decay_mask(params):
    """True for parameters that get weight decay: >= 2-D and not named "bias" or "scale"."""

    def decays(path, leaf) -> bool:
        last = path[-1]
        name = getattr(last, "key", getattr(last, "name", None))
        return leaf.ndim >= 2 and name not in NO_DECAY_NAMES

    return jax.tree_util.tree_map_with_path(decays, params)


def learning_rate_schedule(config: ml_collections.ConfigDict, num_updates: int) -> optax.Schedule:
    """Linear warmup from 0 to `config.learning_rate`, then cosine decay over `num_updates`.

    Args:
        config: `config.optimizer` (learning_rate, warmup_steps, end_learning_rate_ratio).
        num_updates: optimizer updates in the run (train steps // accumulation steps).
    """
    warmup = int(config.warmup_steps)
    if not 0 <= warmup < num_updates:
        raise ConfigError(
            f"optimizer.warmup_steps={warmup} must be in [0, {num_updates}) "
            f"(the number of optimizer updates)"
        )
    return optax.warmup_cosine_decay_schedule(
        init_value=0.0,
        peak_value=config.learning_rate,
        warmup_steps=warmup,
        decay_steps=num_updates,
        end_value=config.learning_rate * config.end_learning_rate_ratio,
    )


def num_optimizer_updates(config: ml_collections.ConfigDict, num_steps: int) -> int:
    """Optimizer updates in a run of `num_steps` train (micro-)steps."""
    accumulation = int(config.accumulation_steps)
    if accumulation < 1:
        raise ConfigError(f"optimizer.accumulation_steps must be >= 1, got {accumulation}")
    return max(num_steps // accumulation, 1)


def make_optimizer(
    config: ml_collections.ConfigDict, num_steps: int
) -> tuple[optax.GradientTransformation, optax.Schedule]:
    """Builds the clipped, masked AdamW chain (optionally gradient-accumulating).

    Args:
        config: `config.optimizer` with learning_rate, warmup_steps, end_learning_rate_ratio,
            b1, b2, eps, weight_decay, grad_clip_norm, accumulation_steps.
        num_steps: train steps in the run (`config.train.num_steps`).

    Returns:
        `(optimizer, schedule)`; `schedule(k)` is the learning rate of the k-th update.
    """
    schedule = learning_rate_schedule(config, num_optimizer_updates(config, num_steps))
    chain = optax.chain(
        optax.clip_by_global_norm(config.grad_clip_norm),
        optax.adamw(
            schedule,
            b1=config.b1,
            b2=config.b2,
            eps=config.eps,
            weight_decay=config.weight_decay,
            mask=decay_mask,
        ),
    )
    if config.accumulation_steps > 1:
        chain = optax.MultiSteps(chain, every_k_schedule=int(config.accumulation_steps))
        chain = chain.gradient_transformation()
    return chain, schedule
