"""Helpers of the `imro_jax.perf` tests: the committed experiment configs by name, a fake clock."""

import pathlib

from imro_jax.train import config as config_lib

CONFIGS = pathlib.Path(__file__).resolve().parents[2] / "experiments" / "configs"
TRIMODAL_SMALL = {"model.dim": 16, "model.num_heads": 2, "model.mlp_dim": 32, "model.depth": 1,
                  "model.fusion_tokens": 2}


def load(name: str, **model_changes):
    """`experiments/configs/<name>.py` with `model.<key> = value` changes."""
    config = config_lib.load_config(CONFIGS / f"{name}.py", [])
    return config_lib.with_overrides(config, {f"model.{k}": v for k, v in model_changes.items()})


def trimodal_small(fusion: str = "imro"):
    """The tri-modal encoders (text, ViT, waveform log-mel) at width 16, one block, 8x8 images."""
    config = config_lib.with_overrides(load("trimodal", fusion=fusion), TRIMODAL_SMALL)
    config.model.modalities.vision = dict(encoder="vit", image_size=8, patch_size=4, channels=3)
    return config


class FakeClock:
    """A seconds counter that moves only when a test moves it (`advance`, or `now += ...`)."""

    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds
