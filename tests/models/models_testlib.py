"""Tiny configs and synthetic batches shared by the model tests (no imro_jax.data import)."""

import importlib.util
import pathlib

import ml_collections
import numpy as np

REPO = pathlib.Path(__file__).resolve().parents[2]

# a: feature vector, b: feature sequence, c: text (padding differs per sample).
TINY_MODALITIES = {
    "a": dict(encoder="feature", input_dim=5),
    "b": dict(encoder="feature", input_dim=4),
    "c": dict(encoder="text", vocab_size=20, max_len=6),
}
SEQUENCE_LENGTHS = {"b": 3}  # feature modalities given as sequences, and their length
# Smaller graphs (faster compiles) where three modalities add nothing.
TWO_MODALITIES = {"a": TINY_MODALITIES["a"], "c": TINY_MODALITIES["c"]}
ONE_MODALITY = {"a": TINY_MODALITIES["a"]}
# The trimodal experiment's encoder kinds (text, ViT, waveform -> log-mel spectrogram), tiny:
# 8x8 images -> 4 patches; 256 samples at 800 Hz -> 7 frames of 8 mels -> 3 x 2 patches.
TRIMODAL_MODALITIES = {
    "text": dict(encoder="text", vocab_size=20, max_len=6),
    "vision": dict(encoder="vit", image_size=8, patch_size=4, channels=3),
    "audio": dict(encoder="spectrogram", input="waveform", sample_rate=800, n_fft=64, hop_length=32,
                  num_mels=8, fmin=0.0, fmax=400.0, patch_frames=2, patch_mels=4),
}
TRIMODAL_NUM_SAMPLES = 256  # waveform length for make_batch(..., num_samples=...)


def tiny_config(fusion="imro", *, task="classification", entropy="predictive", nonfinite="error",
                modalities=None):
    cfg = ml_collections.ConfigDict(dict(
        task=task, fusion=fusion, dim=16, num_heads=2, mlp_dim=32, depth=1, dropout=0.0,
        fusion_tokens=2, nonfinite=nonfinite, reliability=dict(entropy=entropy, eps=1e-6),
        modalities=modalities or TINY_MODALITIES))
    if task == "classification":
        cfg.num_classes = 3
    elif task == "regression":
        cfg.label_variance = 1.0
    else:
        cfg.decoder = dict(vocab_size=12, max_len=5, depth=1)
    return cfg


def loss_config(**overrides):
    base = dict(lambda1=0.01, lambda2=0.1, mi_bound="barber_agakov", unimodal_weight=1.0, joint_weight=0.0,
                evidential_annealing_steps=10, kl_weight=0.01, regression_loss="squared")
    base.update(overrides)
    return ml_collections.ConfigDict(base)


def make_batch(model_config, batch_size=8, seed=0, *, sequence_lengths=SEQUENCE_LENGTHS, num_samples=None):
    """A random batch matching ``model_config`` (numpy arrays, every modality present)."""
    rng = np.random.default_rng(seed)
    batch, mask = {}, {}
    for name, m in model_config.modalities.items():
        kind = m["encoder"]
        if kind == "text":
            ids = rng.integers(1, m["vocab_size"], size=(batch_size, m["max_len"]))
            lengths = rng.integers(1, m["max_len"] + 1, size=batch_size)
            ids[np.arange(m["max_len"])[None] >= lengths[:, None]] = 0
            batch[name] = ids.astype(np.int32)
        elif kind == "vit":
            batch[name] = rng.normal(size=(batch_size, m["image_size"], m["image_size"], m["channels"])).astype(np.float32)
        elif kind == "spectrogram":
            if m["input"] == "waveform":
                batch[name] = rng.normal(size=(batch_size, num_samples or m["sample_rate"])).astype(np.float32)
            else:
                batch[name] = rng.normal(size=(batch_size, 2 * m["patch_frames"], m["num_mels"])).astype(np.float32)
        else:
            length = sequence_lengths.get(name)
            shape = (batch_size, m["input_dim"]) if length is None else (batch_size, length, m["input_dim"])
            batch[name] = rng.normal(size=shape).astype(np.float32)
        mask[name] = np.ones(batch_size, bool)
    batch["mask"] = mask
    task = model_config.task
    if task == "classification":
        batch["label"] = rng.integers(0, model_config.num_classes, size=batch_size).astype(np.int32)
    elif task == "regression":
        batch["label"] = rng.normal(size=batch_size).astype(np.float32)
    else:
        dec = model_config.decoder
        caption = rng.integers(1, dec["vocab_size"], size=(batch_size, dec["max_len"]))
        caption[:, -2:] = 0
        batch["caption"] = caption.astype(np.int32)
    return batch


def load_experiment_config(name):
    spec = importlib.util.spec_from_file_location(f"config_{name}", REPO / "experiments" / "configs" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config()
