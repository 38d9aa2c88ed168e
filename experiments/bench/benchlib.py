"""Plumbing the benchmark scripts share: configs by name, the command line and the `RESULTS.md` log
(written by `imro_jax.perf.Report`, one section per benchmark).

The measuring is library code: steps from `imro_jax.perf.build_step_bench` (the production step of
`build_runtime`), variants timed by `imro_jax.perf.interleaved_timings`. Nothing here imports
`imro_jax.data` (grain, TFDS): the GPU image has neither, and a step benchmark needs synthetic batches only.
"""

from __future__ import annotations

import argparse
import os
import pathlib
from collections.abc import Sequence
from typing import Any

import ml_collections

from imro_jax.train import config as config_lib

REPO = pathlib.Path(__file__).resolve().parents[2]
CONFIGS = REPO / "experiments" / "configs"
RESULTS = pathlib.Path(__file__).resolve().with_name("RESULTS.md")
BASE_CONFIG = CONFIGS / "trimodal.py"
TINY_CONFIG = CONFIGS / "bench_tiny.py"


def load_config(path: str | os.PathLike, overrides: Sequence[str] = ()) -> ml_collections.ConfigDict:
    """`imro_jax.train.config.load_config` where a bare name means `experiments/configs/<name>.py`.

    Args:
        path: file path or config name (`"trimodal"`, `"bench_vitb"`).
        overrides: `key=value` strings (`--config.` prefix optional), type-checked as by the CLI.
    """
    path = pathlib.Path(path)
    return config_lib.load_config(CONFIGS / f"{path}.py" if not path.suffix else path, list(overrides))


def variant(config: ml_collections.ConfigDict, **model_changes: Any) -> ml_collections.ConfigDict:
    """A copy of `config` with `model.<key> = value` changes (e.g. `fusion="uniform"`), checked
    and locked by `imro_jax.train.config.with_overrides` (the one override path)."""
    return config_lib.with_overrides(config, {f"model.{key}": value for key, value in model_changes.items()})


def base_parser(description: str, *, rounds: int | None = None, warmup: int | None = None) -> argparse.ArgumentParser:
    """Arguments every benchmark takes: `--config`, `--override`, `--tiny`, `--results`; and
    `--rounds` / `--warmup` (timed and discarded interleaved rounds) with these defaults where given."""
    parser = argparse.ArgumentParser(description=description,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default=BASE_CONFIG.stem, help="config file or name")
    parser.add_argument("--override", action="append", default=[], metavar="KEY=VALUE",
                        help="config override, e.g. data.batch_size=64 (repeatable)")
    parser.add_argument("--tiny", action="store_true",
                        help="smallest run (bench_tiny config, few steps): a smoke test")
    parser.add_argument("--results", default=str(RESULTS),
                        help="markdown log to write the section to ('' = print only)")
    if rounds is not None:
        parser.add_argument("--rounds", type=int, default=rounds)
    if warmup is not None:
        parser.add_argument("--warmup", type=int, default=warmup)
    return parser


def resolve_config(args: argparse.Namespace, name: str | None = None) -> ml_collections.ConfigDict:
    """The config `name` (default `--config`) with the `--override`s; the tiny one under `--tiny`."""
    return load_config(TINY_CONFIG if args.tiny else name or args.config, args.override)


def config_label(args: argparse.Namespace) -> str:
    """The config's name as the notes give it (`bench_tiny` under `--tiny`)."""
    return TINY_CONFIG.stem if args.tiny else args.config


def config_note(args: argparse.Namespace, config: ml_collections.ConfigDict) -> str:
    """The note every single-device step benchmark starts with: which config, at what size."""
    model = config.model
    return (f"config `{config_label(args)}` (fusion {model.fusion}, batch {config.data.batch_size}, dim "
            f"{model.dim}, depth {model.depth}, compute {config.train.compute_dtype}), synthetic batch, 1 device")


def mfu_target(backend: str) -> float:
    """The project's MFU target: 50% on a GPU (bf16, ViT-B scale), 40% on a CPU (float32)."""
    return 0.5 if backend == "gpu" else 0.4
