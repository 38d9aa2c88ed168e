"""Profile: where a train step's time goes, by model component, forward/backward and op kind.

    python experiments/bench/profile_step.py [--config trimodal] [--fusion imro] [--steps 5]

Traces `--steps` train steps with `jax.profiler` (Perfetto JSON), maps every executed XLA op
(a "thunk" named like its HLO instruction) to the `op_name` metadata of the compiled HLO, and
sums the op times per step:

* component: the Flax module path in `op_name` (encoders_<modality>/<part>, token_fusion,
  estimator, critic, head), else `loss` (model outputs -> scalar) or `optimizer` (no `jvp`);
* pass: `backward` when `op_name` contains `transpose(` (reverse-mode), else `forward`;
* kind: `matmul` (dot / YNNPACK / oneDNN / cuBLAS fusions), `fft`, `layout` (copy/transpose/
  concatenate/pad/slice), `reduce`, `gather/scatter`, `elementwise` (other fusions).

Op times are summed over threads (CPU runs independent ops concurrently), so shares are of the
summed op time; the wall time per step is printed beside them. `--hlo_dump DIR` also writes the
optimised HLO text.
"""

from __future__ import annotations

import collections
import glob
import gzip
import json
import re
import tempfile
import time

import jax

import benchlib
from imro_jax.eval import tables

COMPONENTS = ("token_fusion", "estimator", "critic", "head")
ENCODER = re.compile(r"encoders_(\w+?)(?:/|$|\.)")
ENCODER_PART = re.compile(
    r"(log_mel|patch_embed|embed|positions|self_attention|mlp|ln_\w+|cls)"
)


def instruction_metadata(hlo_text: str) -> dict[str, tuple[str, str]]:
    """`{instruction name: (opcode or fusion kind, op_name)}` from optimised HLO text."""
    table = {}
    for line in hlo_text.splitlines():
        match = re.match(r"\s*(?:ROOT\s+)?%?([\w.\-]+)\s*=\s*[^=]*?\s(\w[\w\-]*)\(", line)
        if not match:
            continue
        name, opcode = match.group(1), match.group(2)
        op_name = re.search(r'op_name="([^"]*)"', line)
        kind = re.search(r"kind=(\w+)", line)
        fusion_kind = re.search(r'"kind":"(\w+)"', line)
        label = opcode
        if opcode == "fusion":
            label = fusion_kind.group(1) if fusion_kind else (kind.group(1) if kind else "fusion")
        table[name] = (label, op_name.group(1) if op_name else "")
    return table


def op_kind(name: str, label: str) -> str:
    """Coarse kind of one executed op (see module docstring)."""
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
    """Model component named by an op's `op_name` (see module docstring)."""
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


def trace_op_times(call, steps: int) -> dict[str, float]:
    """Runs `call()` `steps` times under `jax.profiler`; returns `{op name: seconds per step}`."""
    directory = tempfile.mkdtemp(prefix="imro_profile_")
    jax.profiler.start_trace(directory, create_perfetto_trace=True)
    for _ in range(steps):
        call()
    jax.profiler.stop_trace()
    path = sorted(glob.glob(f"{directory}/**/*.json.gz", recursive=True))[-1]
    with gzip.open(path) as f:
        trace = json.load(f)
    events = trace["traceEvents"] if isinstance(trace, dict) else trace
    times = collections.Counter()
    for event in events:
        if event.get("ph") == "X":
            times[event["name"]] += event.get("dur", 0) * 1e-6 / steps
    return dict(times)


def profile(bench: benchlib.StepBench, steps: int) -> dict:
    """Op time per step of `bench.train()`, grouped (see module docstring)."""
    compiled = bench.compile_train()
    metadata = instruction_metadata(compiled.as_text())
    bench.train()
    wall = benchlib.Summary.of([_wall(bench.train) for _ in range(steps)])
    times = trace_op_times(bench.train, steps)
    groups = {key: collections.Counter() for key in ("component", "pass", "kind", "op")}
    for name, seconds in times.items():
        if name not in metadata:
            continue  # runtime events (executor, python), not XLA ops
        label, op_name = metadata[name]
        passname = "backward" if "transpose(" in op_name else "forward"
        comp = component(op_name)
        if comp == "optimizer":
            passname = "optimizer"
        groups["component"][comp] += seconds
        groups["pass"][passname] += seconds
        groups["kind"][op_kind(name, label)] += seconds
        groups["op"][f"{name} ({op_kind(name, label)}; {op_name[-90:]})"] += seconds
    return {"wall": wall, "hlo": compiled.as_text(), **groups}


def _wall(call) -> float:
    start = time.perf_counter()
    call()
    return time.perf_counter() - start


def _rows(counter: collections.Counter, total: float, top: int | None = None):
    return [(name, f"{seconds * 1e3:.2f}", f"{100 * seconds / total:.1f}")
            for name, seconds in counter.most_common(top)]


def main(argv=None) -> None:
    parser = benchlib.base_parser(__doc__)
    parser.add_argument("--fusion", default="", help="override model.fusion")
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--top", type=int, default=12, help="slowest single ops to list")
    parser.add_argument("--hlo_dump", default="", help="write the optimised HLO text here")
    args = parser.parse_args(argv)
    report = benchlib.Report("Profile of one train step", args)
    config = benchlib.resolve_config(args)
    if args.fusion:
        config = benchlib.variant(config, fusion=args.fusion)
    batch = benchlib.synthetic_batch(config.model, config.data.batch_size)
    bench = benchlib.build_step_bench(config.model.fusion, config, batch, devices=jax.devices()[:1])
    result = profile(bench, args.steps)
    if args.hlo_dump:
        with open(args.hlo_dump, "w") as f:
            f.write(result["hlo"])
    total = sum(result["pass"].values())
    sections = []
    for key, top in (("pass", None), ("kind", None), ("component", None), ("op", args.top)):
        sections.append(f"By {key} (ms of op time per step, % of {total * 1e3:.1f} ms):\n\n"
                        + tables.markdown_table([key, "ms/step", "%"], _rows(result[key], total, top)))
    report.finish(
        "\n\n".join(sections),
        notes=[f"config `{args.config if not args.tiny else 'bench_tiny'}`, fusion "
               f"{config.model.fusion}, batch {config.data.batch_size}, {args.steps} traced steps",
               f"wall time per step: {result['wall'].fmt(1e3, 1)} ms (median [IQR])"],
    )


if __name__ == "__main__":
    main()
