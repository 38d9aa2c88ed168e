"""The PyTorch peer: an ImportError naming the `bench` extra without torch; with torch, the same
parameters, the same first-step loss and the same matmul FLOPs as our model."""

import importlib
import importlib.util

import jax
import numpy as np
import pytest
from perflib import load

from imro_jax import perf


@pytest.mark.skipif(importlib.util.find_spec("torch") is not None, reason="torch is installed")
def test_without_torch_the_import_error_names_the_bench_extra():
    with pytest.raises(ImportError, match=r"optional `bench` extra: pip install \"imro-jax\[bench\]\""):
        importlib.import_module("imro_jax.perf.torch_peer")


def test_the_peer_computes_our_function():
    pytest.importorskip("torch")
    from imro_jax.perf import torch_peer

    config = load("bench_tiny")
    batch = perf.synthetic_batch(config.model, 4)
    assert torch_peer.check_parameter_shapes(config, batch) > 0
    eager, jitted, theirs = torch_peer.first_step_losses(config, batch)
    assert theirs == pytest.approx(eager, rel=1e-5) and jitted == pytest.approx(eager, rel=1e-4)
    bench = perf.build_step_bench("tiny", config, batch, devices=jax.devices()[:1])
    model = torch_peer.peer_model(config, {k: np.shape(v) for k, v in batch.items()}, bench.state.params)
    counted = torch_peer.torch_train_flops(model, torch_peer.torch_batch(batch))
    assert counted == perf.train_flops(perf.train_step_terms(config, batch))
