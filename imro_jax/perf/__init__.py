"""Performance measurement: the production train step made ready to time, and what to time it by.

One concept per module, re-exported here:

  step_bench      the train step of a config built by `imro_jax.train.build_runtime` (the one
                  runtime builder), with a host-drawn state and a device batch (`StepBench`)
  synthetic       synthetic batches of a model config's shapes (no datasets)
  timing          interleaved side-by-side timings, paired per-round ratios, median [IQR]
  flops           model FLOPs: hand count from the config, jaxpr matmul count, XLA cost analysis
  compile_events  compilation counts and phase times from `jax.monitoring`
  machine         the matmul ceiling probes (MFU denominator) and the machine's description
  op_profile      profiler op times grouped by model component, pass and op kind
  input_timing    an input iterator's rate, and the time a loop waits on it
  simulated_cpu   the environment of a subprocess on n simulated CPU devices
  results_log     a benchmark's section of a markdown results log (`Report`)

`imro_jax.perf.torch_peer` (the model in PyTorch, to time ours against) needs the optional
`bench` extra (torch) and is imported on its own, never from here.
"""

from imro_jax.perf.compile_events import CompileCounter
from imro_jax.perf.flops import (
    Term,
    flop_groups,
    forward_flops,
    hand_count,
    jaxpr_matmul_flops,
    model_shaped_product,
    train_flops,
    train_step_terms,
    xla_flops,
)
from imro_jax.perf.input_timing import input_waits, pull_batches
from imro_jax.perf.machine import load_average, machine_info, matmul_probe, numpy_matmul_probe
from imro_jax.perf.op_profile import group_op_times, instruction_metadata, trace_op_times
from imro_jax.perf.results_log import Report
from imro_jax.perf.simulated_cpu import simulated_cpu_env
from imro_jax.perf.step_bench import (
    StepBench,
    abstract_batch,
    build_step_bench,
    compile_train_abstract,
    host_initial_state,
    memory_bytes,
    runtime_for,
)
from imro_jax.perf.synthetic import synthetic_batch
from imro_jax.perf.timing import Summary, interleaved_timings, paired_ratio, wall_seconds

__all__ = [
    "CompileCounter",
    "Report",
    "StepBench",
    "Summary",
    "Term",
    "abstract_batch",
    "build_step_bench",
    "compile_train_abstract",
    "flop_groups",
    "forward_flops",
    "group_op_times",
    "hand_count",
    "host_initial_state",
    "input_waits",
    "instruction_metadata",
    "interleaved_timings",
    "jaxpr_matmul_flops",
    "load_average",
    "machine_info",
    "matmul_probe",
    "memory_bytes",
    "model_shaped_product",
    "numpy_matmul_probe",
    "paired_ratio",
    "pull_batches",
    "runtime_for",
    "simulated_cpu_env",
    "synthetic_batch",
    "trace_op_times",
    "train_flops",
    "train_step_terms",
    "wall_seconds",
    "xla_flops",
]
