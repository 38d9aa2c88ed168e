"""`train.profile_steps` traces exactly the chosen steps; a toy run reports to TensorBoard too."""

import gzip
import json
import pathlib

import jax
import jax.numpy as jnp
import pytest
from test_writers import read_events
from toy import toy_config, toy_task

from imro_jax.train import loop, profiling
from imro_jax.train.config import ConfigError


def _traced_steps(log_dir) -> list[int]:
    """The step numbers of the "train" step annotations in the Perfetto trace under `log_dir`."""
    (trace,) = pathlib.Path(log_dir).glob("plugins/profile/*/perfetto_trace.json.gz")
    events = json.loads(gzip.decompress(trace.read_bytes()))
    events = events["traceEvents"] if isinstance(events, dict) else events
    return sorted(int(e["args"]["step_num"]) for e in events if e.get("name") == "train")


def test_only_the_chosen_steps_are_traced(tmp_path):
    step = jax.jit(lambda state, batch: (state + batch.sum(), {"loss": state}))
    messages = []
    traced = profiling.ProfiledStep(step, (3, 4), first_step=2, num_steps=6, log_dir=tmp_path,
                              message=messages.append)
    state = jnp.zeros(())
    for _ in range(5):  # steps 2..6
        state, _ = traced(state, jnp.ones(3))
    traced.stop()  # no-op: the trace already stopped after step 4
    assert float(state) == 15.0
    assert _traced_steps(tmp_path) == [3, 4]
    assert messages == [f"profile of steps 3..4 written to {tmp_path}"]


@pytest.mark.parametrize("steps,message", [
    ((3,), r"must be \(\) or \(first, last\), got \(3,\)"),
    ((0, 2), r"1 <= first <= last <= train.num_steps \(5\)"),
    ((4, 2), r"1 <= first <= last"),
    ((2, 9), r"<= train.num_steps \(5\)"),
])
def test_bad_profile_steps_are_errors(steps, message):
    with pytest.raises(ConfigError, match=message):
        profiling.check_profile_steps(steps, num_steps=5)


def test_a_run_reports_compiling_writes_tensorboard_and_traces_its_profile_steps(tmp_path, capsys):
    config = toy_config()
    config.train.num_steps, config.train.log_every = 4, 1
    config.train.writers, config.train.profile_steps = ("tensorboard",), (2, 3)
    loop.train(config, tmp_path, toy_task(config))
    out = capsys.readouterr().out
    assert out.index("compiling the train step...") < out.index("step 1 compiled and ran in ")
    assert out.index("step 1 compiled and ran in ") < out.index("step 1/4")
    jsonl = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    losses = {(e.step, v.tag): v.simple_value for e in read_events(tmp_path / "tensorboard")
              for v in e.summary.value if v.tag == "loss"}
    assert losses == pytest.approx({(r["step"], "loss"): r["loss"] for r in jsonl})
    assert sorted(step for step, _ in losses) == [1, 2, 3, 4]
    assert _traced_steps(tmp_path / "profile") == [2, 3]
