"""The experiment configs' data sections are complete and agree with the datasets and models."""

import importlib.util
import pathlib

import pytest

from imro_jax.data import datasets, synth
from imro_jax.data.builders import handwritten, imro_synth

CONFIG_DIR = pathlib.Path(__file__).resolve().parents[2] / "imro_jax" / "configs"  # shipped configs


def _load(name):
    spec = importlib.util.spec_from_file_location(f"config_{name}", CONFIG_DIR / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("name", ["trimodal", "handwritten"])
def test_data_section_matches_schema(name):
    config = _load(name).get_config()
    datasets.validate_data_config(config.data)
    assert set(config.data.keys()) == set(datasets.default_data_config(config.data.name).keys())
    assert config.data.num_classes == config.model.num_classes


def test_trimodal_model_sizes_match_imro_synth():
    config = _load("trimodal").get_config()
    specs = {c.name: c.spec for c in imro_synth.ImroSynth.BUILDER_CONFIGS}
    spec = specs[config.data.builder_config]
    assert specs["small"] == specs["default"]  # smoke runs use the same shapes
    modalities = config.model.modalities
    assert config.data.num_classes == spec.num_classes
    assert (modalities.text.vocab_size, modalities.text.max_len) == (spec.vocab_size, spec.text_length)
    assert (modalities.vision.image_size, modalities.vision.channels) == (spec.image_size, spec.channels)
    assert modalities.audio.sample_rate == spec.sample_rate
    assert sorted(modalities.keys()) == list(synth.MODALITIES)


def test_handwritten_views_match_builder():
    module = _load("handwritten")
    assert module.VIEW_DIMS == handwritten.VIEW_DIMS
    config = module.get_config()
    assert {v: m["input_dim"] for v, m in config.model.modalities.items()} == handwritten.VIEW_DIMS
    assert config.data.builder_config == handwritten.split_config_name(handwritten.FIXED_SPLIT_SEED)
