"""A tiny stand-in for the IMRO model and data pipeline, used by the training-system tests.

The model has every kind of logically partitioned parameter the real one has (input projections,
multi-head attention over modality tokens, LayerNorm, MLP, classifier) and uses dropout, so the
tests exercise sharding rules, the dropout RNG stream and the batch-dict contract without
depending on `imro_jax.models`. The data iterator is deterministic, checkpointable
(`get_state`/`set_state`) and process-aware: process `i` of `n` gets rows `[i*B/n, (i+1)*B/n)` of
the same global batch, so multi-process runs see exactly the single-process batches.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from imro_jax.batch import modality_names
from imro_jax.train.task import Task

MODALITIES = ("a", "b")
FEATURES = 6
NUM_CLASSES = 4


def _dense(features, names, **kwargs):
    return nn.DenseGeneral(
        features,
        kernel_init=nn.with_logical_partitioning(nn.initializers.lecun_normal(), names[0]),
        bias_init=nn.with_logical_partitioning(nn.initializers.zeros, names[1]),
        **kwargs,
    )


class ToyModel(nn.Module):
    """Modality tokens -> one attention block over modalities -> mean pool -> logits [B, C]."""

    embed: int = 16
    heads: int = 4
    mlp: int = 32
    dropout: float = 0.1

    @nn.compact
    def __call__(self, batch: dict, *, train: bool) -> jax.Array:
        tokens = []
        for name in modality_names(batch):
            h = _dense(self.embed, (("patch", "embed"), ("embed",)), name=f"proj_{name}")(batch[name])
            tokens.append(h * batch["mask"][name][:, None])
        h = jnp.stack(tokens, axis=1)  # [batch, modality, embed]
        h = nn.with_logical_constraint(h, ("batch", "modality", "embed"))
        head_dim = self.embed // self.heads

        def project(name, equation, shape, names):
            init = nn.with_logical_partitioning(nn.initializers.lecun_normal(), names)
            return nn.Einsum(shape, equation, use_bias=False, kernel_init=init, name=name)

        q, k, v = (
            project(name, "bme,ehd->bmhd", (self.embed, self.heads, head_dim),
                    ("embed", "heads", "head_dim"))(h)
            for name in ("query", "key", "value")
        )  # [batch, modality, heads, head_dim]
        weights = jax.nn.softmax(jnp.einsum("bmhd,bnhd->bhmn", q, k) / np.sqrt(head_dim), axis=-1)
        context = jnp.einsum("bhmn,bnhd->bmhd", weights, v)
        h = h + project("out", "bmhd,hde->bme", (self.heads, head_dim, self.embed),
                        ("heads", "head_dim", "embed"))(context)
        h = nn.LayerNorm(
            scale_init=nn.with_logical_partitioning(nn.initializers.ones, ("norm",)),
            bias_init=nn.with_logical_partitioning(nn.initializers.zeros, ("norm",)),
        )(h)
        m = nn.gelu(_dense(self.mlp, (("embed", "mlp"), ("mlp",)), name="mlp_in")(h))
        m = nn.Dropout(self.dropout, deterministic=not train)(m)
        h = h + _dense(self.embed, (("mlp", "embed"), ("embed",)), name="mlp_out")(m)
        return _dense(NUM_CLASSES, (("embed", "classes"), ("classes",)), name="head")(h.mean(axis=1))


class ToyIterator:
    """Deterministic infinite batches; state `{"index": batches already produced}`."""

    def __init__(self, seed: int, batch_size: int, process_index: int = 0, process_count: int = 1):
        self.seed, self.batch_size = seed, batch_size
        self.process_index, self.process_count = process_index, process_count
        self.index = 0
        teacher_shape = (len(MODALITIES) * FEATURES, NUM_CLASSES)
        self.teacher = np.random.default_rng(1234).normal(size=teacher_shape)

    def global_batch(self, index: int) -> dict:
        rng = np.random.default_rng([self.seed, index])
        x = rng.normal(size=(self.batch_size, len(MODALITIES), FEATURES)).astype(np.float32)
        label = np.argmax(x.reshape(self.batch_size, -1) @ self.teacher, axis=-1).astype(np.int32)
        batch = {name: x[:, i] for i, name in enumerate(MODALITIES)}
        batch["mask"] = {name: rng.random(self.batch_size) > 0.1 for name in MODALITIES}
        batch["label"] = label
        return batch

    def __iter__(self):
        return self

    def __next__(self) -> dict:
        batch = self.global_batch(self.index)
        self.index += 1
        local = self.batch_size // self.process_count
        rows = slice(self.process_index * local, (self.process_index + 1) * local)
        return jax.tree.map(lambda x: x[rows], batch)

    def get_state(self) -> dict:
        return {"index": self.index}

    def set_state(self, state: dict) -> None:
        self.index = int(state["index"])


class ToyEvalData:
    """A finite eval split of `num_examples` (last batch partial), process-sharded."""

    def __init__(self, num_examples: int, batch_size: int, process_index: int, process_count: int):
        self.source = ToyIterator(999, num_examples).global_batch(0)
        self.batch_size, self.num_examples = batch_size, num_examples
        self.process_index, self.process_count = process_index, process_count

    def __iter__(self):
        local = self.batch_size // self.process_count
        mine = np.arange(self.num_examples)[self.process_index :: self.process_count]
        for start in range(0, len(mine), local):
            yield jax.tree.map(lambda x: x[mine[start : start + local]], self.source)


def toy_loss(model: nn.Module):
    """`loss_fn(params, batch, rng, step) -> (mean cross-entropy, {"accuracy"})`."""

    def loss_fn(params, batch, rng, step):
        del step
        logits = model.apply({"params": params}, batch, train=True, rngs={"dropout": rng})
        logits = logits.astype(jnp.float32)
        loss = optax.softmax_cross_entropy_with_integer_labels(logits, batch["label"]).mean()
        accuracy = (jnp.argmax(logits, -1) == batch["label"]).mean()
        return loss, {"accuracy": accuracy}

    return loss_fn


def toy_task(config: ml_collections.ConfigDict) -> Task:
    """The toy model and data wrapped as a `Task` for `imro_jax.train.loop`."""
    model = ToyModel(dropout=config.model.dropout)
    batch_size = config.data.batch_size

    def eval_fn(variables, batch):
        logits = model.apply(variables, batch, train=False)
        return {"logits": logits, "label": batch["label"]}

    def summarize(outputs):
        correct = np.argmax(outputs["logits"], -1) == outputs["label"]
        return {"accuracy": float(correct.mean()), "num_examples": float(correct.size)}

    return Task(
        init_fn=lambda rng, batch: model.init({"params": rng}, batch, train=False),
        loss_fn=toy_loss(model),
        eval_fn=eval_fn,
        summarize_eval=summarize,
        example_batch=lambda: ToyIterator(config.seed, batch_size).global_batch(0),
        train_data=lambda seed, index, count: ToyIterator(seed, batch_size, index, count),
        eval_data=lambda split, index, count: ToyEvalData(
            config.data.eval_examples, batch_size, index, count
        ),
    )


def toy_config() -> ml_collections.ConfigDict:
    """Same train sections as experiments/configs/*.py, sized for tests."""
    config = ml_collections.ConfigDict()
    config.seed = 0
    config.data = dict(batch_size=16, eval_examples=20)
    config.model = dict(dropout=0.1)
    config.optimizer = dict(
        learning_rate=3e-2, warmup_steps=2, end_learning_rate_ratio=0.1, b1=0.9, b2=0.99, eps=1e-8,
        weight_decay=1e-2, grad_clip_norm=1.0, accumulation_steps=1,
    )
    config.train = dict(num_steps=8, log_every=1, eval_every=0, eval_split="validation",
                        compute_dtype="float32", prefetch=2, writers=(), profile_steps=())
    config.mesh = dict(data=-1, model=1, fsdp=False, rules=DEFAULT_RULES,
                       coordinator_address="", num_processes=1, process_id=0)
    config.checkpoint = dict(every_steps=4, keep_last=2, best_metric="", best_mode="max")
    return config


DEFAULT_RULES = (
    ("batch", "data"), ("heads", "model"), ("mlp", "model"), ("vocab", "model"),
)
