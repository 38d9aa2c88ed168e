"""CMU-MOSEI as 7-class sentiment: cross-entropy on round(clip(score, -3, 3)) + 3 in 0..6.

`experiments/configs/cmu_mosei.py` with `data.label = "class7"` and a classification head. This is
the variant every fusion runs on, `energy` (QMF) and `evidential` (TMC) included (they need class
logits). `seven_class(config)` turns any affect regression config (MOSI too) into it.
"""

import pathlib

import ml_collections

from imro_jax.train.config import load_config_file

NUM_CLASSES = 7


def seven_class(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """A copy of an affect regression config that classifies the 7 rounded sentiment classes."""
    config = ml_collections.ConfigDict(config.to_dict())
    config.data.label = "class7"
    config.data.num_classes = NUM_CLASSES
    config.model.task = "classification"
    del config.model["label_variance"]  # regression-only key
    config.model.num_classes = NUM_CLASSES
    config.model.reliability.decision = 1.0  # classification: the vote, as imro_jax/configs/trimodal.py
    config.checkpoint.best_metric = "eval/accuracy"
    config.checkpoint.best_mode = "max"
    return config


def get_config() -> ml_collections.ConfigDict:
    return seven_class(load_config_file(pathlib.Path(__file__).with_name("cmu_mosei.py")))
