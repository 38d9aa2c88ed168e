"""Plumbing the benchmark scripts share: configs by name, the command line and the `RESULTS.md` log.

The measuring is library code (`imro_jax.perf`): every benchmark builds its steps with
`imro_jax.perf.build_step_bench`, i.e. `imro_jax.train.runtime.build_runtime`, the function
`imro train` builds its runtime with, so what is timed is the production step by construction,
and compares variants with `imro_jax.perf.interleaved_timings` (interleaved rounds, paired
ratios, median [IQR]). Nothing here imports `imro_jax.data` (grain, TFDS): the GPU image has
neither, and synthetic batches of the right shapes are all a step benchmark needs.
"""

from __future__ import annotations

import argparse
import datetime
import os
import pathlib
import sys
import time
from collections.abc import Sequence
from typing import Any

import ml_collections

from imro_jax.eval import results_files
from imro_jax.perf import load_average, machine_info
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


class Report:
    """Collects a benchmark's table and notes; prints them and writes them to the results log.

    The log (`RESULTS.md`) keeps the latest section of each title (`imro_jax.eval.results_files.replace_section`;
    the history is in git), with the command, repo-relative paths, versions and load.

    Usage::

        report = Report("IMRO overhead", args)        # records date, command, load at start
        ...
        report.finish(table, notes=[...])             # load at end, print, write to RESULTS.md
    """

    def __init__(self, title: str, args: argparse.Namespace):
        self.title, self.results = title, getattr(args, "results", str(RESULTS))
        self.command = "python " + " ".join([relative(sys.argv[0])] + sys.argv[1:])
        self.date = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
        self.load_start = load_average()
        self.start = time.perf_counter()

    def finish(self, table: str, notes: Sequence[str] = ()) -> str:
        info = machine_info()
        lines = [
            f"## {self.title} ({self.date})",
            "",
            f"- command: `{self.command}`",
            f"- machine: {info['cpu']}; {info['devices']}",
            f"- software: Python {info['python']}, {info['versions']}",
            f"- load average (1 min) at start / end: {self.load_start:.2f} / {load_average():.2f}; "
            f"wall time {time.perf_counter() - self.start:.0f} s",
            *[f"- {note}" for note in notes],
            "",
            table,
            "",
        ]
        text = "\n".join(lines)
        print(text, flush=True)
        if self.results:
            results_files.replace_section(self.results, self.title, text)
        return text


def relative(path: str | os.PathLike) -> str:
    """`path` as the results log writes it: relative to this checkout (`REPO`), or as given outside it."""
    return results_files.repo_relative(path, REPO)


def base_parser(description: str) -> argparse.ArgumentParser:
    """Arguments every benchmark takes: `--config`, `--override`, `--tiny`, `--results`."""
    parser = argparse.ArgumentParser(description=description,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default=BASE_CONFIG.stem, help="config file or name")
    parser.add_argument("--override", action="append", default=[], metavar="KEY=VALUE",
                        help="config override, e.g. data.batch_size=64 (repeatable)")
    parser.add_argument("--tiny", action="store_true",
                        help="smallest run (bench_tiny config, few steps): a smoke test")
    parser.add_argument("--results", default=str(RESULTS),
                        help="markdown log to write the section to ('' = print only)")
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
