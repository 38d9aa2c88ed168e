"""The experiment configs' data sections are complete and agree with the datasets and models."""

import importlib.util
import pathlib

import pytest

from imro_jax.data import datasets, synth
from imro_jax.data.builders import cmu_affect, handwritten, imro_synth
from imro_jax.models import parse_model_config

# experiments/configs: every config (the shipped ones, imro_jax/configs, are re-exported there)
CONFIG_DIR = pathlib.Path(__file__).resolve().parents[2] / "experiments" / "configs"


def _load(name):
    spec = importlib.util.spec_from_file_location(f"config_{name}", CONFIG_DIR / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("name", ["trimodal", "handwritten", "cmu_mosei", "cmu_mosi", "cmu_mosei_class7",
                                  "synth_regression"])
def test_data_section_matches_schema(name):
    config = _load(name).get_config()
    datasets.validate_data_config(config.data)
    assert set(config.data.keys()) == set(datasets.default_data_config(config.data.name).keys())
    assert config.data.num_classes == (config.model.num_classes if config.model.task == "classification" else 1)
    assert parse_model_config(config.model).task == config.model.task  # the model section parses too


@pytest.mark.parametrize("name,builder", [("cmu_mosei", cmu_affect.CmuMosei), ("cmu_mosi", cmu_affect.CmuMosi)])
def test_affect_configs_match_the_builders(name, builder):
    config = _load(name).get_config()
    assert config.data.name == builder.name and config.data.label == "score"
    assert {m: v["input_dim"] for m, v in config.model.modalities.items()} == builder.DIMS
    assert config.model.task == "regression" and config.loss.regression_loss == "l1"
    seven = _load("cmu_mosei_class7").seven_class(config)
    assert (seven.data.label, seven.data.num_classes, seven.model.num_classes) == ("class7", 7, 7)
    assert seven.model.task == "classification" and "label_variance" not in seven.model
    assert config.model.task == "regression"  # seven_class copies


@pytest.mark.parametrize("name", ["trimodal", "handwritten", "cmu_mosei", "cmu_mosi", "cmu_mosei_class7",
                                  "synth_regression"])
def test_regression_configs_predict_without_the_vote(name):
    # chosen on imro_synth's validation split per task (experiments/results/select_reliability*)
    config = _load(name).get_config()
    expected = 0.0 if config.model.task == "regression" else 1.0
    assert config.model.reliability.decision == expected


def test_synth_regression_config_matches_its_builder_config():
    config = _load("synth_regression").get_config()
    builder_configs = {c.name: c for c in imro_synth.ImroSynth.BUILDER_CONFIGS}
    chosen = builder_configs[config.data.builder_config]
    assert chosen.score_noise_std is not None and imro_synth.num_outputs(chosen) == config.data.num_classes == 1
    # Var(Y) by hand for K = 4 and noise 0.2: (16 - 1) / 12 + 2 * 0.25^2 + 0.2^2.
    assert config.model.label_variance == pytest.approx(1.25 + 0.125 + 0.04)


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
    from imro_jax.configs import handwritten as shipped

    module = _load("handwritten")
    assert shipped.VIEW_DIMS == handwritten.VIEW_DIMS
    config = module.get_config()
    assert {v: m["input_dim"] for v, m in config.model.modalities.items()} == handwritten.VIEW_DIMS
    assert config.data.builder_config == handwritten.split_config_name(handwritten.FIXED_SPLIT_SEED)
