"""Fabricated CMU-MOSI/MOSEI pickles in the exact layout of MulT's aligned release (a plain module
that the data tests' conftest and the affect end-to-end test import).

Layout (``imro_jax/data/builders/cmu_affect.py``): ``{"train" | "valid" | "test": {"text",
"vision", "audio": float32[N, 50, d], "labels": float32[N, 1, 1], "id": bytes[N, 3]}}``, pickled
with protocol 2. With ``front_padding`` each segment has L ~ U{3..50} real words and the first
50 - L steps of every modality are all zero, as in the release.
"""

import pickle

import numpy as np

from imro_jax.data.builders.cmu_affect import SEQ_LEN, CmuMosei, CmuMosi

MOSI_DIMS = {"text": 300, "vision": 20, "audio": 5}  # the order the arrays are drawn in
MOSEI_DIMS = {m: CmuMosei.DIMS[m] for m in MOSI_DIMS}
assert {m: CmuMosi.DIMS[m] for m in MOSI_DIMS} == MOSI_DIMS
MOSI_SIZES = {"train": 24, "valid": 8, "test": 12}


def fabricate_affect_pickle(path, *, dims=MOSI_DIMS, sizes=MOSI_SIZES, seed=0, audio_neg_inf=3,
                            front_padding=False):
    """Writes a small pickle with the layout of MulT's aligned release; returns its contents.

    The labels are uniform on [-3, 3] except the first four of each split: -0.5, 0.0, 2.5, -2.5
    (round-half-even ties and the 0 boundary). The text features shift with the label, so a
    model can learn from them. ``audio_neg_inf`` first steps of the first training segment's first
    audio feature are -inf (MOSEI's COVAREP holds -inf).
    """
    rng = np.random.default_rng(seed)
    content = {}
    for split, n in sizes.items():
        entry = {m: rng.normal(size=(n, SEQ_LEN, d)).astype(np.float32) for m, d in dims.items()}
        labels = rng.uniform(-3, 3, n)
        labels[:4] = [-0.5, 0.0, 2.5, -2.5]
        entry["labels"] = labels.reshape(n, 1, 1).astype(np.float32)
        entry["id"] = np.array([[f"vid{split}{i}".encode(), b"0", b"1"] for i in range(n)])
        if front_padding:
            entry["text"][..., 0] += 2.0 * labels[:, None].astype(np.float32)
            words = rng.integers(3, SEQ_LEN + 1, n)
            padding = np.arange(SEQ_LEN)[None, :] < (SEQ_LEN - words)[:, None]  # [N, 50]
            for m in dims:
                entry[m][padding] = 0.0
        content[split] = entry
    if audio_neg_inf:
        content["train"]["audio"][0, :audio_neg_inf, 0] = -np.inf
    with open(path, "wb") as f:
        pickle.dump(content, f, protocol=2)
    return content
