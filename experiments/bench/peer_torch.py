"""Benchmark 7: our jitted train step against the same model written in PyTorch, in one run.

    python experiments/bench/peer_torch.py [--configs trimodal,handwritten] [--rounds 20] \
        [--matmul_size 2048] [--no_compile]

Needs torch (the optional `bench` extra: `pip install torch==2.13.0`); nothing else imports it.
The peer is `imro_jax.perf.torch_peer.TorchIMRO`: the tri-modal IMRO model, its loss, clipping,
AdamW and schedule, re-implemented in PyTorch operation by operation (see that module).

Checks, before timing (each config):
* the parameter names, shapes and count equal the Flax model's (built independently from the
  spec);
* the first train-step loss on the same parameters and batch (dropout and modality dropout
  off) equals ours to float32 rounding: the two are the same function;
* the matmul FLOPs torch's `FlopCounterMode` counts in one forward + backward equal the hand
  count of `imro_jax.perf.flops` (which equals our jaxpr's count, `tests/perf`).

Timing: our step (`imro_jax.perf.build_step_bench`, i.e. `build_runtime`), torch eager and
`torch.compile` (inductor), each from the same host-drawn parameters, interleaved round by round.
torch and numpy run `--threads` threads (default 1: on a shared 2-core machine their OpenMP /
BLAS thread teams collapse when the other core is busy, e.g. 715 ms instead of 9 ms for the
tiny step; see NOTES.md); XLA uses its own thread pool over every core.
The matmul ceiling is the best of a float32 `[n, n] @ [n, n]` in jnp.dot, numpy and torch,
interleaved in the same rounds; MFU is given against it and against XLA's own jnp.dot rate.
"""

from __future__ import annotations

import os
import time

import jax
import numpy as np
import threadpoolctl
import torch

import benchlib
from imro_jax import perf
from imro_jax.eval import tables
from imro_jax.perf import torch_peer

DEFAULT_CONFIGS = "trimodal,handwritten"
OURS = "ours (jit)"


def peer_calls(config, bench, numpy_batch, no_compile: bool) -> tuple[dict, str]:
    """`{label: call}` of the torch eager (and compiled) train steps, and the compile note."""
    input_shapes = {k: np.shape(v) for k, v in numpy_batch.items()}
    batch = torch_peer.torch_batch(numpy_batch)
    eager = torch_peer.make_train_step(torch_peer.peer_model(config, input_shapes, bench.state.params), config)
    calls = {"torch eager": lambda: eager(batch)}
    if no_compile:
        return calls, "not run (--no_compile)"
    model = torch_peer.peer_model(config, input_shapes, bench.state.params)
    compiled = torch_peer.make_train_step(model, config, compile=True)
    start = time.perf_counter()
    try:
        compiled(batch)
    except Exception as error:  # report, do not hide: the table then has no compile column
        return calls, f"FAILED: {type(error).__name__}: {str(error).splitlines()[0][:200]}"
    calls["torch.compile"] = lambda: compiled(batch)
    return calls, f"first call (compile) {time.perf_counter() - start:.0f} s"


def run_config(name, args, rows, checks):
    config = benchlib.resolve_config(args, name)
    numpy_batch = perf.synthetic_batch(config.model, 4 if args.tiny else config.data.batch_size)
    num_params = torch_peer.check_parameter_shapes(config, numpy_batch)
    ours_loss, jit_loss, torch_loss = torch_peer.first_step_losses(config, numpy_batch)
    if abs(ours_loss - torch_loss) > 1e-5 * abs(ours_loss):
        raise AssertionError(f"{name}: first-step loss {ours_loss} (ours, op by op) != {torch_loss} (torch)")

    hand = perf.train_flops(perf.train_step_terms(config, numpy_batch))
    bench = perf.build_step_bench(name, config, numpy_batch, devices=jax.devices()[:1])
    bench.compile_train()
    counted = torch_peer.torch_train_flops(
        torch_peer.peer_model(config, {k: np.shape(v) for k, v in numpy_batch.items()}, bench.state.params),
        torch_peer.torch_batch(numpy_batch))
    checks.append(f"`{name}`: {num_params:,} parameters in both (names and shapes equal); first-step loss "
                  f"{ours_loss:.6f} (ours op by op) / {jit_loss:.6f} (ours jitted) / {torch_loss:.6f} (torch); "
                  f"train FLOPs: hand count {hand:,.0f}, torch FlopCounterMode {counted:,} "
                  f"({'equal' if counted == hand else f'ratio {counted / hand:.4f}'})")

    calls, compile_note = peer_calls(config, bench, numpy_batch, args.no_compile)
    steps = [OURS, *calls]
    calls[OURS] = bench.train
    n = args.matmul_size
    calls |= {"matmul jnp.dot": perf.matmul_probe((n, n, n))[0], "matmul numpy": perf.numpy_matmul_probe(n),
              "matmul torch": torch_peer.torch_matmul_probe(n)}
    times = perf.interleaved_timings(calls, rounds=args.rounds, warmup=args.warmup)
    rates = {k: 2.0 * n ** 3 / v for k, v in times.items() if k.startswith("matmul")}
    best = np.maximum.reduce(list(rates.values()))  # per round: the best of the three
    for label in steps:
        achieved = hand / times[label]
        rows.append((name, label, perf.Summary.of(times[label]).fmt(1e3, 1),
                     "1 (reference)" if label == OURS else perf.paired_ratio(times[OURS], times[label]).fmt(),
                     perf.Summary.of(achieved / best).fmt(100, 1) + " %",
                     perf.Summary.of(achieved / rates["matmul jnp.dot"]).fmt(100, 1) + " %"))
    checks.append(f"`{name}` torch.compile: {compile_note}; matmul {n}^2 float32 GFLOP/s: "
                  + ", ".join(f"{k.split()[1]} {perf.Summary.of(v).fmt(1e-9, 0)}" for k, v in rates.items()))


def main(argv=None) -> None:
    parser = benchlib.base_parser(__doc__, rounds=20, warmup=3)
    parser.add_argument("--configs", default=DEFAULT_CONFIGS, help="comma-separated config names")
    parser.add_argument("--matmul_size", type=int, default=2048)
    parser.add_argument("--no_compile", action="store_true", help="skip torch.compile")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch intra-op threads and numpy BLAS threads (XLA keeps its own pool)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    threadpoolctl.threadpool_limits(args.threads)
    if args.tiny:  # eager only: inductor's first compile takes minutes on a loaded 2-core machine
        args.configs, args.rounds, args.warmup, args.matmul_size, args.no_compile = "bench_tiny", 3, 1, 256, True
    torch.manual_seed(0)
    report = perf.Report("Benchmark 7: PyTorch peer", args.results, benchlib.REPO)
    rows, checks = [], []
    for name in args.configs.split(","):
        run_config(name, args, rows, checks)
    report.finish(tables.markdown_table(
        ["config", "train step", "ms", "ours / this (time ratio)", "MFU vs best matmul", "MFU vs jnp.dot"], rows),
        notes=[*checks, f"torch {torch.__version__}, {torch.get_num_threads()} threads; "
                        f"XLA_FLAGS={os.environ.get('XLA_FLAGS', '')!r}; {args.rounds} interleaved rounds",
               "ratio: per-round paired ours / this (below 1: ours is faster); MFU: hand-counted train "
               "FLOPs / step time / matmul rate of the same round"])


if __name__ == "__main__":
    main()
