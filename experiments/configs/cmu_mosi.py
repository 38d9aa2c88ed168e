"""CMU-MOSI sentiment regression on MulT's word-aligned features (`mosi_data.pkl`).

`experiments/configs/cmu_mosei.py` (L1 loss on the score in [-3, 3], feature-sequence encoders)
with MOSI's data and feature sizes: text (GloVe 300), vision (Facet 20), audio (COVAREP 5), 50
steps; 1284 training segments, so fewer steps.
"""

import pathlib

import ml_collections

from imro_jax.data.builders.cmu_affect import CmuMosi
from imro_jax.train.config import load_config_file


def get_config() -> ml_collections.ConfigDict:
    config = load_config_file(pathlib.Path(__file__).with_name("cmu_mosei.py"))
    config.data.name = "cmu_mosi"
    config.model.modalities = {m: dict(encoder="feature", input_dim=d) for m, d in CmuMosi.DIMS.items()}
    config.train.num_steps = 2000  # about 50 epochs of 1284 segments at batch 32
    config.train.eval_every = 500
    config.checkpoint.every_steps = 500
    return config
