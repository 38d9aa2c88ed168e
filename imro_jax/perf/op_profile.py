"""Where a compiled step's time goes: profiler op times grouped by model component, pass and kind.

A `jax.profiler` trace (Perfetto JSON) names every executed XLA op (a "thunk") like its HLO
instruction; the optimised HLO text (`compiled.as_text()`) gives each instruction its opcode (or
fusion kind) and the `op_name` metadata of the JAX operation it came from, which holds the Flax
module path and the transformation (`jvp(`, `transpose(`). Each op's time is attributed to

* component: the Flax module path (`encoders_<modality>/<part>`, `token_fusion`, `estimator`,
  `critic`, `head`), else `loss` (under `jvp`/`transpose` but outside the model) or `optimizer`;
* pass: `backward` when `op_name` contains `transpose(` (reverse mode), `optimizer` for the
  optimizer's ops, else `forward`;
* kind: `matmul` (dot / YNNPACK / oneDNN / cuBLAS fusions), `fft`, `gather/scatter`, `reduce`,
  `layout` (copy, transpose, concatenate, pad, slice, broadcast) or `elementwise`.

Op times are summed over threads (a CPU runs independent ops concurrently), so shares are of the
summed op time, not of the wall time.
"""

from __future__ import annotations

import collections
import glob
import gzip
import json
import re
import tempfile
from collections.abc import Callable, Mapping

import jax

COMPONENTS = ("token_fusion", "estimator", "critic", "head")
ENCODER = re.compile(r"encoders_(\w+?)(?:/|$|\.)")
ENCODER_PART = re.compile(r"(log_mel|patch_embed|embed|positions|self_attention|mlp|ln_\w+|cls)")
INSTRUCTION = re.compile(r"\s*(?:ROOT\s+)?%?([\w.\-]+)\s*=\s*[^=]*?\s(\w[\w\-]*)\(")
GROUPINGS = ("component", "pass", "kind", "op")


def instruction_metadata(hlo_text: str) -> dict[str, tuple[str, str]]:
    """`{instruction name: (opcode or fusion kind, op_name)}` of optimised HLO text.

    Args:
        hlo_text: `jax.stages.Compiled.as_text()`.
    """
    table = {}
    for line in hlo_text.splitlines():
        match = INSTRUCTION.match(line)
        if not match:
            continue
        name, opcode = match.group(1), match.group(2)
        op_name = re.search(r'op_name="([^"]*)"', line)
        if opcode == "fusion":
            kind = re.search(r'"kind":"(\w+)"', line) or re.search(r"kind=(\w+)", line)
            opcode = kind.group(1) if kind else "fusion"
        table[name] = (opcode, op_name.group(1) if op_name else "")
    return table


def op_kind(name: str, label: str) -> str:
    """Coarse kind of one executed op from its name and HLO label (see the module docstring)."""
    text = f"{name} {label}".lower()
    if any(k in text for k in ("ynn", "dot", "onednn", "gemm", "cublas", "matmul", "convolution")):
        return "matmul"
    if "fft" in text:
        return "fft"
    if any(k in text for k in ("gather", "scatter", "dynamic")):
        return "gather/scatter"
    if "reduce" in text:
        return "reduce"
    if any(k in text for k in ("copy", "transpose", "concatenate", "pad", "slice", "broadcast")):
        return "layout"
    return "elementwise"


def component(op_name: str) -> str:
    """Model component named by an op's `op_name` (see the module docstring).

    >>> component("jit(train_step)/jvp(Model)/encoders_audio/trunk/block_0/mlp/dot_general")
    'encoders_audio/mlp'
    """
    encoder = ENCODER.search(op_name)
    if encoder:
        part = ENCODER_PART.search(op_name[encoder.end():])
        return f"encoders_{encoder.group(1)}/{part.group(1) if part else 'other'}"
    for name in COMPONENTS:
        if name in op_name:
            return name
    if "jvp(" in op_name or "transpose(" in op_name:
        return "loss"
    return "optimizer"


def trace_op_times(call: Callable[[], object], steps: int) -> dict[str, float]:
    """Runs `call()` `steps` times under `jax.profiler`; returns `{op name: seconds per call}`.

    Every complete ("X") event of the trace counts, the runtime's own events included; keep
    those whose name is an HLO instruction (`group_op_times` does).
    """
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    directory = tempfile.mkdtemp(prefix="imro_profile_")
    jax.profiler.start_trace(directory, create_perfetto_trace=True)
    try:
        for _ in range(steps):
            call()
    finally:
        jax.profiler.stop_trace()
    path = sorted(glob.glob(f"{directory}/**/*.json.gz", recursive=True))[-1]
    with gzip.open(path) as f:
        trace = json.load(f)
    events = trace["traceEvents"] if isinstance(trace, dict) else trace
    times = collections.Counter()
    for event in events:
        if event.get("ph") == "X":
            times[event["name"]] += event.get("dur", 0) * 1e-6 / steps  # microseconds
    return dict(times)


def group_op_times(times: Mapping[str, float], metadata: Mapping[str, tuple[str, str]]
                   ) -> dict[str, collections.Counter]:
    """Op seconds summed by component, pass, kind and op (names not in `metadata` are dropped).

    Args:
        times: `{op name: seconds}` (`trace_op_times`).
        metadata: `instruction_metadata` of the same compiled executable.

    Returns:
        `{"component" | "pass" | "kind" | "op": Counter(label -> seconds)}`; the "op" labels
        read `"name (kind; tail of op_name)"`.
    """
    groups = {key: collections.Counter() for key in GROUPINGS}
    for name, seconds in times.items():
        if name not in metadata:
            continue  # runtime events (executor, Python), not XLA ops
        label, op_name = metadata[name]
        part, kind = component(op_name), op_kind(name, label)
        passname = "optimizer" if part == "optimizer" else "backward" if "transpose(" in op_name else "forward"
        groups["component"][part] += seconds
        groups["pass"][passname] += seconds
        groups["kind"][kind] += seconds
        groups["op"][f"{name} ({kind}; {op_name[-90:]})"] += seconds
    return groups
