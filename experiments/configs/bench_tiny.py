"""The smallest model the benchmarks run: their `--tiny` smoke mode (`tests/bench`).

`experiments/configs/trimodal.py` with two feature-vector modalities (one token each) instead of
text, vision and audio, width 16 and one block: every code path of a benchmark runs, and a train
step compiles in the fixed minimum time (optimizer, loss, one encoder design).
"""

import pathlib

import ml_collections

from imro_jax.train.config import load_config_file


def get_config() -> ml_collections.ConfigDict:
    config = load_config_file(pathlib.Path(__file__).with_name("trimodal.py"))
    config.data.batch_size = 8
    model = config.model
    model.dim, model.num_heads, model.mlp_dim, model.depth, model.fusion_tokens = 16, 2, 32, 1, 2
    model.modalities = ml_collections.ConfigDict(
        {"a": dict(encoder="feature", input_dim=6), "b": dict(encoder="feature", input_dim=4)}
    )
    config.train.num_steps = 50
    config.optimizer.warmup_steps = 2
    return config
