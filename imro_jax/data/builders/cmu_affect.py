"""TFDS builders ``cmu_mosi`` and ``cmu_mosei``: the aligned-feature pickles of MulT/MultiBench.

Source files (placed by the user in the manual dir, loaded with the restricted unpickler of
``imro_jax.data.pickle_safe``, never with plain ``pickle``):

  * ``mosi_data.pkl``: CMU-MOSI, text GloVe [N, 50, 300], vision Facet [N, 50, 20], audio
    COVAREP [N, 50, 5]; splits train/valid/test = 1284/229/686.
  * ``mosei_senti_data.pkl``: CMU-MOSEI, text [N, 50, 300], vision [N, 50, 35], audio
    [N, 50, 74]; splits 16326/1871/4659.

Layout (as read by MulT's ``src/dataset.py`` and MultiBench's ``datasets/affect/get_data.py``):
``{"train" | "valid" | "test": {"text", "vision", "audio": float[N, 50, d], "labels":
float[N, 1, 1] sentiment in [-3, 3], "id": array[N, ...] (optional)}}``. Words are aligned to 50
steps, zero-padded at the front. Non-finite values (MOSEI audio holds -inf) are set to 0 as MulT
does; the counts are stored in ``info.metadata["nonfinite_replaced"]``.

Derived labels: ``label2`` = 1 if score >= 0 else 0 (non-negative vs negative, the "Acc-2 has-0"
convention; the MulT "non-0" variant drops score == 0 samples, use ``score`` for it);
``label7`` = ``clip(round(score), -3, 3) + 3`` (numpy round-half-to-even, as MulT's metrics).
"""

from __future__ import annotations

import functools
import pathlib

import numpy as np
import tensorflow_datasets as tfds

from imro_jax.data import pickle_safe
from imro_jax.data.builders.common import array_feature

MODALITIES = ("audio", "text", "vision")
SEQ_LEN = 50
SPLITS = {"train": "train", "validation": "valid", "test": "test"}  # TFDS name -> pickle key
LABEL_KINDS = ("score", "class2", "class7")
_DOWNLOAD_URL = "https://www.dropbox.com/sh/hyzpgx1hp9nj37s/AAB7FhBqJOFDw2hEyvv2ZXHxa?dl=0"

_CITATION_MULT = """\
@inproceedings{tsai2019mult,
  title = {Multimodal Transformer for Unaligned Multimodal Language Sequences},
  author = {Tsai, Yao-Hung Hubert and Bai, Shaojie and Liang, Paul Pu and Kolter, J. Zico and
            Morency, Louis-Philippe and Salakhutdinov, Ruslan},
  booktitle = {Proceedings of ACL},
  year = {2019},
}
"""


def class2(score) -> np.ndarray:
    """Binary sentiment: 1 (non-negative, score >= 0) or 0 (negative). int64, same shape."""
    return (np.asarray(score) >= 0).astype(np.int64)


def class7(score) -> np.ndarray:
    """Seven-class sentiment ``clip(round(score), -3, 3) + 3`` in 0..6. int64, same shape."""
    return (np.clip(np.round(np.asarray(score, np.float64)), -3, 3) + 3).astype(np.int64)


def manual_instructions(pickle_name: str) -> str:
    """What to download, from where and where to put it."""
    return (
        f"Download `{pickle_name}` (aligned features of MulT, Tsai et al. 2019) from\n"
        f"  {_DOWNLOAD_URL}\n"
        "(linked from https://github.com/yaohungt/Multimodal-Transformer under 'Datasets';\n"
        "MultiBench distributes the same file) and put it in the manual dir: by default\n"
        "<data_dir>/downloads/manual/, or pass `--manual_dir DIR` to\n"
        "`python -m imro_jax.data.prepare`. It is read with a restricted unpickler (numpy arrays\n"
        "and plain containers only)."
    )


def _id_text(raw) -> str:
    """One entry of the pickle's ``id`` array (bytes, str, number or a row of them) as text."""
    items = np.asarray(raw, dtype=object).reshape(-1)
    return "|".join(x.decode("utf-8", "replace") if isinstance(x, bytes) else str(x) for x in items)


def _finite_labels(raw, n: int, where: str) -> np.ndarray:
    """The first label of each of the `n` samples as float64 ``[n]``; NaN/inf is an error.

    Raises:
      ValueError: naming ``where`` and the first rows whose label is not a finite score.
    """
    labels = np.asarray(raw, np.float64).reshape(n, -1)[:, 0]
    bad = np.flatnonzero(~np.isfinite(labels))
    if bad.size:
        raise ValueError(
            f"{where}: labels must be finite sentiment scores in [-3, 3]; {bad.size} are NaN or "
            f"inf, in rows {bad[:5].tolist()}"
        )
    return labels


class _CmuAffect(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    """Shared builder for the aligned MulT pickles; subclasses set the file and the dimensions."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Initial release: MulT aligned (50-step) features."}
    BUILDER_CONFIGS = [
        tfds.core.BuilderConfig(name="aligned", description="word-aligned features, 50 steps (MulT)")
    ]
    PICKLE_NAME: str
    DIMS: dict[str, int]
    DATASET_DESCRIPTION: str
    DATASET_CITATION: str

    def _info(self) -> tfds.core.DatasetInfo:
        features = {
            m: array_feature((SEQ_LEN, d), np.float32, f"{m} features per aligned word step")
            for m, d in self.DIMS.items()
        }
        features.update(
            score=tfds.features.Scalar(dtype=np.float32, doc="sentiment in [-3, 3]"),
            label2=tfds.features.ClassLabel(names=["negative", "non_negative"], doc="score >= 0"),
            label7=tfds.features.ClassLabel(
                names=[str(v) for v in range(-3, 4)], doc="clip(round(score), -3, 3)"
            ),
            id=tfds.features.Text(doc="segment id from the pickle"),
        )
        return tfds.core.DatasetInfo(
            builder=self,
            description=self.DATASET_DESCRIPTION,
            citation=self.DATASET_CITATION + _CITATION_MULT,
            features=tfds.features.FeaturesDict(features),
            homepage="https://github.com/yaohungt/Multimodal-Transformer",
            metadata=tfds.core.MetadataDict(),
        )

    def _split_generators(self, dl_manager):
        try:
            path = pathlib.Path(dl_manager.manual_dir) / self.PICKLE_NAME
        except AssertionError as err:  # TFDS: manual dir missing or empty
            raise FileNotFoundError(
                f"{self.name}: missing {self.PICKLE_NAME}. {self.MANUAL_DOWNLOAD_INSTRUCTIONS}"
            ) from err
        if not path.exists():
            raise FileNotFoundError(f"{self.name}: missing {path}. {self.MANUAL_DOWNLOAD_INSTRUCTIONS}")
        data = pickle_safe.restricted_load(path)
        arrays = {split: self._check_split(data, key, path) for split, key in SPLITS.items()}
        self.info.metadata["source"] = str(path)
        self.info.metadata["nonfinite_replaced"] = {
            split: {m: int(np.sum(~np.isfinite(a[m]))) for m in MODALITIES} for split, a in arrays.items()
        }
        return {split: self._generate_examples(split, a) for split, a in arrays.items()}

    def _check_split(self, data, key: str, path) -> dict:
        if not isinstance(data, dict) or key not in data:
            found = sorted(data) if isinstance(data, dict) else type(data).__name__
            raise ValueError(f"{path}: expected a dict with split '{key}', found {found}")
        split = data[key]
        needed = (*MODALITIES, "labels")
        missing = [k for k in needed if k not in split]
        if missing:
            raise ValueError(f"{path}: split '{key}' lacks {missing}; has {sorted(split)}")
        n = np.asarray(split["labels"]).shape[0]
        out = {}
        for m, d in self.DIMS.items():
            x = np.asarray(split[m])
            if x.shape != (n, SEQ_LEN, d):
                raise ValueError(
                    f"{path}: split '{key}' {m} has shape {x.shape}, expected {(n, SEQ_LEN, d)} "
                    f"for {self.name} (aligned MulT release)"
                )
            out[m] = x
        out["labels"] = _finite_labels(split["labels"], n, f"{path}: split '{key}'")
        out["id"] = split.get("id")
        return out

    def _generate_examples(self, split: str, arrays: dict):
        n = arrays["labels"].shape[0]
        for i in range(n):
            score = float(arrays["labels"][i])
            example = {m: np.nan_to_num(arrays[m][i].astype(np.float32), nan=0.0, posinf=0.0, neginf=0.0)
                       for m in MODALITIES}
            example.update(
                score=np.float32(score),
                label2=int(class2(score)),
                label7=int(class7(score)),
                id=_id_text(arrays["id"][i]) if arrays["id"] is not None else f"{split}_{i}",
            )
            yield f"{split}_{i}", example


class CmuMosi(_CmuAffect):
    """CMU-MOSI aligned features (MulT release): text 300, vision 20, audio 5, 50 steps."""

    PICKLE_NAME = "mosi_data.pkl"
    DIMS = {"audio": 5, "text": 300, "vision": 20}
    MANUAL_DOWNLOAD_INSTRUCTIONS = manual_instructions(PICKLE_NAME)
    DATASET_DESCRIPTION = (
        "CMU-MOSI: 2199 opinion video segments from 93 YouTube videos, sentiment in [-3, 3]; "
        "word-aligned GloVe (300), Facet (20) and COVAREP (5) features, 50 steps (MulT release)."
    )
    DATASET_CITATION = """\
@article{zadeh2016mosi,
  title = {MOSI: Multimodal Corpus of Sentiment Intensity and Subjectivity Analysis in Online
           Opinion Videos},
  author = {Zadeh, Amir and Zellers, Rowan and Pincus, Eli and Morency, Louis-Philippe},
  journal = {IEEE Intelligent Systems},
  year = {2016},
}
"""


class CmuMosei(_CmuAffect):
    """CMU-MOSEI aligned features (MulT release): text 300, vision 35, audio 74, 50 steps."""

    PICKLE_NAME = "mosei_senti_data.pkl"
    DIMS = {"audio": 74, "text": 300, "vision": 35}
    MANUAL_DOWNLOAD_INSTRUCTIONS = manual_instructions(PICKLE_NAME)
    DATASET_DESCRIPTION = (
        "CMU-MOSEI: 23k sentence-level opinion segments from 1000 YouTube speakers, sentiment in "
        "[-3, 3]; word-aligned GloVe (300), Facet (35) and COVAREP (74) features, 50 steps "
        "(MulT release)."
    )
    DATASET_CITATION = """\
@inproceedings{zadeh2018mosei,
  title = {Multimodal Language Analysis in the Wild: CMU-MOSEI Dataset and Interpretable Dynamic
           Fusion Graph},
  author = {Zadeh, AmirAli Bagher and Liang, Paul Pu and Poria, Soujanya and Cambria, Erik and
            Morency, Louis-Philippe},
  booktitle = {Proceedings of ACL},
  year = {2018},
}
"""


def to_batch_element(example: dict, *, label: str) -> dict:
    """Stored example -> batch-contract element.

    Args:
      example: decoded TFDS example.
      label: ``"score"`` (float32 regression target in [-3, 3]), ``"class2"`` or ``"class7"``
        (int32 class).

    Returns:
      ``{"audio": float32[50, d_a], "text": float32[50, 300], "vision": float32[50, d_v],
      "mask": {m: True}, "label": float32 | int32}``.
    """
    element = {m: np.asarray(example[m], np.float32) for m in MODALITIES}
    element["mask"] = {m: np.bool_(True) for m in MODALITIES}
    if label == "score":
        element["label"] = np.float32(example["score"])
    elif label == "class2":
        element["label"] = np.int32(example["label2"])
    elif label == "class7":
        element["label"] = np.int32(example["label7"])
    else:
        raise ValueError(f"unknown label kind {label!r}; expected one of {LABEL_KINDS}")
    return element


def batch_element_fn(label: str):
    """``to_batch_element`` with the label kind bound (picklable, for grain workers)."""
    if label not in LABEL_KINDS:
        raise ValueError(f"unknown label kind {label!r}; expected one of {LABEL_KINDS}")
    return functools.partial(to_batch_element, label=label)
