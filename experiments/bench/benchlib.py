"""Shared plumbing of the benchmarks: configs, synthetic batches, jitted steps, paired timing,
compilation counting and the `RESULTS.md` log.

Every benchmark builds its steps with `imro_jax.train.runtime.build_runtime`, the function
`imro train` builds its runtime with, on the model functions of `imro_jax.train.model_fns`
(`fixed_batch_task`), so what is timed is the production step by construction. Nothing here
imports `imro_jax.data` (grain, TFDS): the GPU image has neither, and synthetic batches of the
right shapes are all a step benchmark needs.

Timing protocol (the machine is shared and noisy): variants are timed in the same process,
interleaved round by round in a shuffled order, after warm-up; each sample is one call followed
by `jax.block_until_ready`. Comparisons are paired per round (ratio of the two samples of one
round), summarised by the median and the interquartile range.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import os
import pathlib
import platform
import random
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from imro_jax.eval import results_files
from imro_jax.models.spec import FeatureSpec, SpectrogramSpec, TextSpec, VitSpec, parse_model_config
from imro_jax.train import config as config_lib
from imro_jax.train import input as input_lib
from imro_jax.train import model_fns
from imro_jax.train import runtime as runtime_lib
from imro_jax.train import step as step_lib

REPO = pathlib.Path(__file__).resolve().parents[2]
CONFIGS = REPO / "experiments" / "configs"
RESULTS = pathlib.Path(__file__).resolve().with_name("RESULTS.md")
BASE_CONFIG = CONFIGS / "trimodal.py"
TINY_CONFIG = CONFIGS / "bench_tiny.py"
GPU_CONFIG = CONFIGS / "bench_vitb.py"
TRACE_EVENT = "/jax/core/compile/jaxpr_trace_duration"
LOWER_EVENT = "/jax/core/compile/jaxpr_to_mlir_module_duration"
BACKEND_COMPILE_EVENT = "/jax/core/compile/backend_compile_duration"
CACHE_HIT_EVENT = "/jax/compilation_cache/cache_hits"


# ---------------------------------------------------------------------------------------------
# Configs and synthetic batches


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


def _random_input(spec: Any, batch_size: int, rng: np.random.Generator, feature_length: int | None):
    """One modality's input `[batch, ...]` for an encoder spec (float32 / int32 numpy)."""
    if isinstance(spec, TextSpec):  # ids in [2, vocab), every position real (worst case)
        return rng.integers(2, spec.vocab_size, size=(batch_size, spec.max_len), dtype=np.int32)
    if isinstance(spec, VitSpec):
        shape = (batch_size, spec.image_size, spec.image_size, spec.channels)
    elif isinstance(spec, SpectrogramSpec):
        seconds_of_audio = (batch_size, spec.sample_rate)
        frames = (batch_size, 16 * spec.patch_frames, spec.num_mels)
        shape = seconds_of_audio if spec.input == "waveform" else frames
    elif isinstance(spec, FeatureSpec):
        shape = (batch_size, spec.input_dim)
        if feature_length is not None:
            shape = (batch_size, feature_length, spec.input_dim)
    else:
        raise TypeError(f"no synthetic input for encoder spec {type(spec).__name__}")
    return rng.standard_normal(shape, dtype=np.float32)


def synthetic_batch(
    model_config: ml_collections.ConfigDict,
    batch_size: int,
    *,
    seed: int = 0,
    feature_length: int | None = None,
    audio_samples: int | None = None,
) -> dict:
    """A numpy batch dict for `model_config` with every modality present.

    Args:
        model_config: the `model` config section.
        batch_size: rows.
        seed: numpy seed.
        feature_length: `feature` encoders get sequences `[batch, feature_length, input_dim]`
            (None: vectors `[batch, input_dim]`, one token).
        audio_samples: waveform length of `spectrogram` encoders (default: one second).

    Returns:
        `{modality: array, "mask": {modality: bool[B]}, "label" | "caption": ...}`.
    """
    spec = parse_model_config(model_config)
    rng = np.random.default_rng(seed)
    batch = {name: _random_input(enc, batch_size, rng, feature_length) for name, enc in spec.modalities}
    for name, enc in spec.modalities:
        if isinstance(enc, SpectrogramSpec) and enc.input == "waveform" and audio_samples:
            batch[name] = rng.standard_normal((batch_size, audio_samples), dtype=np.float32)
    batch["mask"] = {name: np.ones(batch_size, bool) for name in spec.modality_names}
    if spec.task == "classification":
        batch["label"] = rng.integers(0, spec.num_classes, size=batch_size, dtype=np.int32)
    elif spec.task == "regression":
        batch["label"] = rng.standard_normal(batch_size, dtype=np.float32)
    else:
        caption = rng.integers(1, spec.decoder.vocab_size, size=(batch_size, spec.decoder.max_len))
        caption[:, spec.decoder.max_len // 2:] = 0
        batch["caption"] = caption.astype(np.int32)
    return batch


# ---------------------------------------------------------------------------------------------
# Steps


def runtime_for(
    config: ml_collections.ConfigDict,
    numpy_batch: dict,
    *,
    devices: Sequence[jax.Device] | None = None,
    loss_fn: Callable | None = None,
) -> runtime_lib.Runtime:
    """`build_runtime` of `config` on the model's `fixed_batch_task` (nothing allocated).

    Args:
        config: full config (model, loss, optimizer, train.num_steps/compute_dtype, mesh).
        numpy_batch: a global batch (numpy), for shapes.
        devices: devices of the ("data", "model") mesh (default: all); `config.mesh` sizes it.
        loss_fn: replaces the model's IMRO loss (e.g. a task-loss-only baseline).
    """
    task = model_fns.fixed_batch_task(config, numpy_batch)
    return runtime_lib.build_runtime(config, task, devices=devices, loss_fn=loss_fn)


def abstract_batch(runtime: runtime_lib.Runtime, numpy_batch: dict) -> dict:
    """`ShapeDtypeStruct`s of a batch on the runtime's mesh (for `lower` without data)."""
    return jax.tree.map(
        lambda x: jax.ShapeDtypeStruct(np.shape(x), np.asarray(x).dtype, sharding=runtime.batch_sharding),
        numpy_batch,
    )


def host_initial_state(abstract_state: Any, seed: int) -> Any:
    """A `TrainState` drawn on the host and placed in its shardings (no compilation).

    Parameters named `*bias` are 0, LayerNorm `scale`s 1, every other parameter N(0, 0.02^2);
    optimizer state, step and skipped count are 0. Benchmarks time the step, not the
    initialiser, and this saves one compilation per model; every process and device count draws
    the same values for the same seed.
    """
    rng = np.random.default_rng(seed)

    def put(value, leaf):
        return jax.device_put(np.asarray(value, dtype=leaf.dtype), leaf.sharding)

    def param(path, leaf):
        name = str(getattr(path[-1], "key", getattr(path[-1], "name", "")))
        if name.endswith("bias"):
            return put(np.zeros(leaf.shape), leaf)
        if name == "scale":
            return put(np.ones(leaf.shape), leaf)
        return put(0.02 * rng.standard_normal(leaf.shape), leaf)

    zeros = lambda leaf: put(np.zeros(leaf.shape), leaf)  # noqa: E731
    key_data = np.zeros(abstract_state.rng.shape)
    key_data[-1] = seed
    return abstract_state.replace(
        step=zeros(abstract_state.step),
        params=jax.tree_util.tree_map_with_path(param, abstract_state.params),
        opt_state=jax.tree.map(zeros, abstract_state.opt_state),
        rng=put(key_data, abstract_state.rng),
        skipped=zeros(abstract_state.skipped),
        model_state=jax.tree.map(zeros, abstract_state.model_state),
    )


@dataclasses.dataclass
class StepBench:
    """One config's jitted train step, forward pass and inference, with state and a device batch.

    Attributes:
        name: label in tables.
        config: the config.
        runtime: the config's `Runtime` (mesh, shardings, the production train step).
        train_step: `runtime.train_step`, or its AOT-compiled executable after `compile_train`.
        batch: global device batch (sharded over "data").
        state: current `TrainState` (replaced by every `train()` call: the step donates it).
        forward: jitted `(params, batch, rng, step) -> loss` (train-mode forward and loss only).
        infer: the production eval step `(variables, batch) -> outputs` (eval mode).
    """

    name: str
    config: ml_collections.ConfigDict
    runtime: runtime_lib.Runtime
    train_step: Callable
    batch: dict
    state: Any
    forward: Callable
    infer: Callable

    def train(self):
        """One train step; returns its metrics after the step finished."""
        self.state, metrics = self.train_step(self.state, self.batch)
        jax.block_until_ready((self.state, metrics))
        return metrics

    def forward_loss(self):
        """Forward pass and loss only (no gradient)."""
        return jax.block_until_ready(self.forward(self.state.params, self.batch, self._rng(), self.state.step))

    def inference(self):
        """Eval-mode logits."""
        return jax.block_until_ready(self.infer(self.state.variables(), self.batch))

    def _rng(self):
        return jax.random.fold_in(jax.random.wrap_key_data(self.state.rng), 0)

    def lower_train(self):
        """`jax.stages.Lowered` of the train step on this state and batch (nothing runs)."""
        return self.runtime.lower_train(self.state, self.batch)

    def compile_train(self):
        """Compiles the train step ahead of time and uses that executable from now on.

        Returns:
            The `jax.stages.Compiled` (cost and memory analyses), compiled once only.
        """
        compiled = self.lower_train().compile()
        self.train_step = compiled
        return compiled


def build_step_bench(
    name: str,
    config: ml_collections.ConfigDict,
    numpy_batch: dict,
    *,
    devices: Sequence[jax.Device] | None = None,
    loss_fn: Callable | None = None,
    init: str = "host",
) -> StepBench:
    """`runtime_for` plus a state and the batch on the mesh.

    Args:
        name: label.
        config, numpy_batch, devices, loss_fn: as for `runtime_for`.
        init: "host" (`host_initial_state`, no compilation) or "model" (the model's own
            initialiser, `Runtime.new_state`: one more compilation).
    """
    runtime = runtime_for(config, numpy_batch, devices=devices, loss_fn=loss_fn)
    if init == "host":
        state = host_initial_state(runtime.abstract_state, config.seed)
    elif init == "model":
        state = runtime.new_state(config.seed)
    else:
        raise ValueError(f"init must be 'host' or 'model', got {init!r}")
    batch = input_lib.to_global_batch(numpy_batch, runtime.batch_sharding)
    loss = runtime.loss_fn
    forward = step_lib.under_mesh(jax.jit(lambda p, b, r, s: loss(p, b, r, s)[0]), runtime.mesh, runtime.rules)
    return StepBench(
        name=name, config=config, runtime=runtime, train_step=runtime.train_step, batch=batch,
        state=state, forward=forward, infer=runtime.eval_step(runtime.task.eval_fn),
    )


def memory_bytes(compiled) -> int:
    """Arguments + temporaries + outputs - aliased (donated) bytes of a compiled executable.

    (XLA:CPU's `peak_memory_in_bytes` counts only the arguments, so it is not used.)
    """
    stats = compiled.memory_analysis()
    return int(stats.argument_size_in_bytes + stats.temp_size_in_bytes
               + stats.output_size_in_bytes - stats.alias_size_in_bytes)


# ---------------------------------------------------------------------------------------------
# Timing and statistics


def interleaved_timings(
    calls: Mapping[str, Callable[[], Any]], *, rounds: int, warmup: int, seed: int = 0
) -> dict[str, np.ndarray]:
    """Times every call once per round, in a shuffled order each round, after `warmup` rounds.

    Returns:
        `{name: float64[rounds]}` wall seconds; index r of every array is the same round.
    """
    order = list(calls)
    shuffle = random.Random(seed)
    samples = {name: np.zeros(rounds) for name in order}
    for r in range(-warmup, rounds):
        shuffle.shuffle(order)
        for name in order:
            start = time.perf_counter()
            calls[name]()
            if r >= 0:
                samples[name][r] = time.perf_counter() - start
    return samples


@dataclasses.dataclass(frozen=True)
class Summary:
    """Median and quartiles of a sample."""

    median: float
    q1: float
    q3: float
    n: int

    @classmethod
    def of(cls, values: Sequence[float]) -> "Summary":
        values = np.asarray(values, np.float64)
        q1, median, q3 = np.percentile(values, [25, 50, 75])
        return cls(float(median), float(q1), float(q3), len(values))

    def fmt(self, scale: float = 1.0, digits: int = 3) -> str:
        """`median [q1, q3]` of the values times `scale`."""
        return (f"{self.median * scale:.{digits}f} "
                f"[{self.q1 * scale:.{digits}f}, {self.q3 * scale:.{digits}f}]")


def paired_ratio(numerator: np.ndarray, denominator: np.ndarray) -> Summary:
    """Summary of the per-round ratios `numerator[r] / denominator[r]`."""
    return Summary.of(np.asarray(numerator) / np.asarray(denominator))


# ---------------------------------------------------------------------------------------------
# Compilation counting


class CompileCounter:
    """Counts compilations while active, from `jax.monitoring` events.

    Every `jax.jit` cache miss records `/jax/core/compile/backend_compile_duration` (also when
    the executable then comes from the persistent compilation cache, which `cache_hits` counts),
    after a trace (`jaxpr_trace_duration`) and a lowering (`jaxpr_to_mlir_module_duration`).

    Attributes:
        events: `(phase, fun_name, seconds)` in order; phase is "trace", "lower" or "compile".
        cache_hits: persistent compilation cache hits.
    """

    PHASES = {TRACE_EVENT: "trace", LOWER_EVENT: "lower", BACKEND_COMPILE_EVENT: "compile"}

    def __init__(self):
        self.events: list[tuple[str, str, float]] = []
        self.cache_hits = 0

    def _on_duration(self, event: str, duration_secs: float, **kwargs) -> None:
        if event in self.PHASES:
            self.events.append((self.PHASES[event], str(kwargs.get("fun_name", "?")), float(duration_secs)))

    def _on_event(self, event: str, **kwargs) -> None:
        if event == CACHE_HIT_EVENT:
            self.cache_hits += 1

    def __enter__(self) -> "CompileCounter":
        jax.monitoring.register_event_duration_secs_listener(self._on_duration)
        jax.monitoring.register_event_listener(self._on_event)
        return self

    def __exit__(self, *exc) -> None:
        jax.monitoring.unregister_event_duration_listener(self._on_duration)
        jax.monitoring.unregister_event_listener(self._on_event)

    def count(self, function: str = "") -> int:
        """Backend compilations (jit cache misses) of functions whose name contains `function`."""
        return sum(phase == "compile" and function in name for phase, name, _ in self.events)

    def seconds(self, phase: str, function: str = "") -> float:
        """Total wall seconds of one phase for functions whose name contains `function`."""
        return sum(t for p, name, t in self.events if p == phase and function in name)


# ---------------------------------------------------------------------------------------------
# Matmul ceiling


def matmul_probe(size: int, dtype, shape: tuple[int, int, int] | None = None) -> tuple[Callable[[], Any], float]:
    """A jitted `[m, k] @ [k, n]` `jnp.dot` in `dtype` on random data, and its FLOPs (2 m k n).

    Args:
        size: m = k = n when `shape` is None (the square ceiling probe).
        dtype: operand dtype.
        shape: `(m, k, n)`, e.g. a model-shaped product.

    Returns:
        `(call, flops)`; `call()` runs one product and waits for it.
    """
    m, k, n = shape or (size, size, size)
    key_a, key_b = jax.random.split(jax.random.key(0), 2)
    a = jax.random.normal(key_a, (m, k), jnp.float32).astype(dtype)
    b = jax.random.normal(key_b, (k, n), jnp.float32).astype(dtype)
    dot = jax.jit(jnp.dot)
    jax.block_until_ready(dot(a, b))
    return (lambda: jax.block_until_ready(dot(a, b))), 2.0 * m * k * n


# ---------------------------------------------------------------------------------------------
# Reporting


def machine_info() -> dict[str, str]:
    """Machine, software versions and devices, for the results log."""
    import flax
    import jaxlib
    import optax

    cpu = platform.processor() or platform.machine()
    try:
        for line in pathlib.Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    devices = jax.devices()
    return {
        "cpu": f"{cpu}, {os.cpu_count()} logical cores",
        "python": platform.python_version(),
        "versions": f"jax {jax.__version__}, jaxlib {jaxlib.__version__}, flax {flax.__version__}, "
                    f"optax {optax.__version__}, numpy {np.__version__}",
        "devices": f"{len(devices)} x {devices[0].device_kind} ({devices[0].platform})",
    }


def load_average() -> float:
    """1-minute load average (NaN where the OS has none)."""
    try:
        return os.getloadavg()[0]
    except OSError:
        return float("nan")


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


def resolve_config(args: argparse.Namespace) -> ml_collections.ConfigDict:
    """The config selected by `--config`/`--override`, or the tiny config under `--tiny`."""
    return load_config(TINY_CONFIG if args.tiny else args.config, args.override)
