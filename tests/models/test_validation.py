"""Bad input and bad config raise errors that name the problem (expected vs given)."""

import numpy as np
import pytest
from models_testlib import make_batch, tiny_config

from imro_jax.models import parse_model_config, validate_batch


@pytest.fixture()
def cfg_and_batch():
    cfg = tiny_config("imro")
    return cfg, make_batch(cfg, batch_size=4)


def test_valid_batch_passes(cfg_and_batch):
    cfg, batch = cfg_and_batch
    validate_batch(batch, cfg)
    validate_batch(batch, parse_model_config(cfg))


@pytest.mark.parametrize("name,value,message", [
    ("a", np.zeros((4, 6), np.float32), r"modality 'a': expected float\[batch, 5\].*got float32\[4, 6\]"),
    ("a", np.zeros((4, 5), np.int32), r"modality 'a': expected float.*got int32\[4, 5\]"),
    ("a", np.zeros((3, 5), np.float32), r"disagree on the batch size.*'a': 3, 'b': 4"),
    ("c", np.zeros((4, 6), np.float32), r"modality 'c': expected int\[batch, tokens <= 6\]"),
    ("c", np.ones((4, 9), np.int32), r"tokens <= 6.*got int32\[4, 9\]"),
])
def test_wrong_shape_or_dtype_names_expected_and_given(cfg_and_batch, name, value, message):
    cfg, batch = cfg_and_batch
    with pytest.raises(ValueError, match=message):
        validate_batch({**batch, name: value}, cfg)


def test_unknown_and_missing_modalities(cfg_and_batch):
    cfg, batch = cfg_and_batch
    with pytest.raises(ValueError, match=r"unknown: \['depth'\]"):
        validate_batch({**batch, "depth": batch["a"]}, cfg)
    without_b = {k: v for k, v in batch.items() if k != "b"}
    with pytest.raises(ValueError, match=r"missing: \['b'\]"):
        validate_batch(without_b, cfg)
    with pytest.raises(ValueError, match=r"batch\['mask'\]\['a'\]: expected bool\[4\], got float32"):
        validate_batch({**batch, "mask": {**batch["mask"], "a": np.ones(4, np.float32)}}, cfg)


def test_out_of_range_tokens_and_labels(cfg_and_batch):
    cfg, batch = cfg_and_batch
    ids = batch["c"].copy()
    ids[1, 0] = 20
    with pytest.raises(ValueError, match=r"modality 'c': token ids must be in \[0, 20\); got values \[20\] in samples \[1\]"):
        validate_batch({**batch, "c": ids}, cfg)
    with pytest.raises(ValueError, match=r"label'\] must be in \[0, 3\)"):
        validate_batch({**batch, "label": np.array([0, 1, 3, 0], np.int32)}, cfg)
    with pytest.raises(ValueError, match=r"expected int\[4\] for classification, got float32\[4\]"):
        validate_batch({**batch, "label": np.zeros(4, np.float32)}, cfg)


def test_nonfinite_input_names_the_modality_unless_as_missing(cfg_and_batch):
    cfg, batch = cfg_and_batch
    b = batch["b"].copy()
    b[2, 0, 1] = np.nan
    with pytest.raises(ValueError, match=r"modality 'b' contains NaN or Inf in samples \[2\]"):
        validate_batch({**batch, "b": b}, cfg)
    validate_batch({**batch, "b": b}, tiny_config("imro", nonfinite="as_missing"))
    # NaN in a modality already marked missing is not an error either.
    mask = {**batch["mask"], "b": np.array([True, True, False, True])}
    validate_batch({**batch, "b": b, "mask": mask}, cfg)


def test_sample_without_any_modality(cfg_and_batch):
    cfg, batch = cfg_and_batch
    mask = {name: np.array([True, False, True, True]) for name in batch["mask"]}
    with pytest.raises(ValueError, match=r"samples \[1\] have no modality present"):
        validate_batch({**batch, "mask": mask}, cfg)
    # An all-padding text counts as absent.
    mask = {"a": np.array([True, False, True, True]), "b": np.array([True, False, True, True]),
            "c": np.ones(4, bool)}
    ids = batch["c"].copy()
    ids[1] = 0
    with pytest.raises(ValueError, match=r"samples \[1\] have no modality present"):
        validate_batch({**batch, "mask": mask, "c": ids}, cfg)


@pytest.mark.parametrize("edit,message", [
    (lambda c: c.update(fusion="attention"), r"model.fusion must be one of .*got 'attention'"),
    (lambda c: c.update(dim=15), r"model.dim=15 must be divisible by model.num_heads=2"),
    (lambda c: c.update(colour="red"), r"model: expected keys .*unknown \['colour'\]"),
    (lambda c: c.modalities.a.update(hidden=3), r"model.modalities.a: .*unknown \['hidden'\]"),
    (lambda c: c.modalities.a.update(encoder="cnn"), r"model.modalities.a.encoder must be one of"),
    (lambda c: c.reliability.update(entropy="renyi"), r"model.reliability.entropy must be one of"),
    (lambda c: c.reliability.update(normalize="no"), r"model.reliability.normalize must be a bool"),
    (lambda c: c.update(label_variance=1.0), r"only used by task 'regression'"),
    (lambda c: c.update(task="regression", fusion="energy"), r"fusion='energy' supports the tasks \('classification',\), not 'regression'"),
])
def test_bad_model_config_names_the_key(edit, message):
    cfg = tiny_config("imro")
    edit(cfg)
    with pytest.raises(ValueError, match=message):
        parse_model_config(cfg)
