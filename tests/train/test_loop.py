"""The train/eval loops end to end on the toy task: logs, eval, kill -9 + resume, multi-process."""

import json
import signal
import socket
import subprocess
import time

import jax
import numpy as np
import pytest
from trainlib import subprocess_env, toy_run_command
from toy import ToyEvalData, ToyModel, toy_config, toy_task

from imro_jax.train import checkpoint as checkpoint_lib
from imro_jax.train import loop

NUM_STEPS = 12
OVERRIDES = {  # shared by the in-process reference and the subprocess runs
    "train.num_steps": NUM_STEPS,
    "train.eval_every": 6,
    "checkpoint.every_steps": 3,
    "checkpoint.best_metric": "eval/accuracy",
}


def _config(**extra):
    config = toy_config()
    for key, value in {**OVERRIDES, **extra}.items():
        section, name = key.split(".")
        config[section][name] = value
    return config


def _cli_overrides(**extra) -> list[str]:
    return [f"--config.{k}={v}" for k, v in {**OVERRIDES, **extra}.items()]


def _records(workdir):
    return [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]


def _train_losses(records) -> dict[int, float]:
    train = [r for r in records if "loss" in r]
    assert len(train) == len({r["step"] for r in train}), "a step was logged twice"
    return {r["step"]: r["loss"] for r in train}


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """An uninterrupted single-process run on the 8-device mesh."""
    workdir = tmp_path_factory.mktemp("reference")
    config = _config()
    final = loop.train(config, workdir, toy_task(config))
    return workdir, _records(workdir), final


def test_run_writes_config_metrics_and_checkpoints(reference, capsys):
    workdir, records, final = reference
    saved = json.loads((workdir / "config.json").read_text())
    assert saved["train"]["num_steps"] == NUM_STEPS and saved["mesh"]["rules"][0] == ["batch", "data"]
    losses = _train_losses(records)
    assert sorted(losses) == list(range(1, NUM_STEPS + 1))
    first = next(r for r in records if r["step"] == 1)
    for key in ("loss", "accuracy", "lr", "grad_norm", "skipped", "examples_per_s", "steps_per_s"):
        assert np.isfinite(first[key]), key
    assert first["lr"] == 0.0  # linear warmup starts at 0
    assert np.mean([losses[s] for s in range(9, 13)]) < np.mean([losses[s] for s in range(1, 5)])
    evals = [r for r in records if "eval/accuracy" in r]
    assert [r["step"] for r in evals] == [6, 12] and final["eval/accuracy"] == evals[-1]["eval/accuracy"]
    # Last 2 kept (every 3 steps), plus the best eval checkpoint (6 or 12).
    steps = sorted(int(p.name) for p in (workdir / "checkpoints").iterdir() if p.name.isdigit())
    best = 6 if evals[0]["eval/accuracy"] > evals[1]["eval/accuracy"] else 12
    assert steps == sorted({9, 12, best})


def test_eval_covers_every_example_once_with_padding_removed(reference, setup):
    workdir, records, _ = reference
    config = _config()
    task = toy_task(config)
    metrics = loop.evaluate_checkpoint(config, workdir, task, "validation", step=12)
    assert metrics["num_examples"] == config.data.eval_examples == 20  # 16 + 4 (12 pad rows)
    eval12 = next(r for r in records if r["step"] == 12 and "eval/accuracy" in r)
    assert metrics["accuracy"] == eval12["eval/accuracy"]
    # Independent path: restore the params and run the model on the whole split on the host.
    ckpt = checkpoint_lib.Checkpointer(workdir / "checkpoints", keep_last=2)
    params = jax.device_get(ckpt.restore(12, setup().abstract_state()).state.params)
    ckpt.close()
    data = ToyEvalData(20, 20, 0, 1).source
    logits = ToyModel(dropout=config.model.dropout).apply({"params": params}, data, train=False)
    expected = float(np.mean(np.argmax(np.asarray(logits), -1) == data["label"]))
    assert metrics["accuracy"] == expected
    assert json.loads((workdir / "eval_validation.json").read_text())["step"] == 12


def test_restore_params_matches_the_checkpointer_and_defaults_to_the_best(reference, setup, tmp_path):
    workdir, records, _ = reference
    config = _config()
    task = toy_task(config)
    ckpt = checkpoint_lib.Checkpointer(workdir / "checkpoints", keep_last=2)
    evals = {r["step"]: r["eval/accuracy"] for r in records if "eval/accuracy" in r}
    best = max(evals, key=evals.get)  # the eval steps are 6 and 12; ties do not occur on the toy task
    assert evals[6] != evals[12]
    for step, want_step in ((9, 9), (None, best)):
        got = loop.restore_params(config, workdir, task, step)
        expected = jax.device_get(ckpt.restore(want_step, setup().abstract_state()).state.params)
        assert jax.tree.all(jax.tree.map(np.array_equal, got, expected))
        assert all(isinstance(x, np.ndarray) for x in jax.tree.leaves(got))
    ckpt.close()
    with pytest.raises(checkpoint_lib.CheckpointError, match="no checkpoint"):
        loop.restore_params(config, tmp_path / "empty", task)


def _signal_mid_run(workdir, signum, env=None) -> tuple[int, str]:
    """Starts a slow toy run, sends `signum` once step 7 is logged; returns (status, stderr)."""
    env = env or dict(subprocess_env(), IMRO_TEST_BATCH_DELAY="0.25")
    process = subprocess.Popen(toy_run_command(workdir, *_cli_overrides()), env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and process.poll() is None:
            metrics = workdir / "metrics.jsonl"
            if metrics.exists() and any(r["step"] >= 7 for r in _records(workdir)):
                break
            time.sleep(0.05)
        assert process.poll() is None, process.stderr.read().decode()[-2000:]
        process.send_signal(signum)
        _, stderr = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        process.stderr.close()
    return process.returncode, stderr.decode()


def _resume_in_process(workdir, capsys) -> int:
    """Reruns the run in `workdir` here; returns the step it resumed from."""
    config = _config()
    loop.train(config, workdir, toy_task(config))
    out = capsys.readouterr().out
    return int(out.split("resumed from checkpoint step ")[1].split()[0])


def test_resume_after_sigkill_reproduces_the_uninterrupted_losses(reference, tmp_path, capsys):
    _, reference_records, _ = reference
    workdir = tmp_path / "killed"
    status, _ = _signal_mid_run(workdir, signal.SIGKILL)
    assert status == -signal.SIGKILL
    killed_at = max(r["step"] for r in _records(workdir))
    assert 7 <= killed_at < NUM_STEPS  # it died mid-run
    resumed_from = _resume_in_process(workdir, capsys)
    assert resumed_from % 3 == 0 and 0 < resumed_from <= killed_at  # a committed checkpoint
    assert _train_losses(_records(workdir)) == _train_losses(reference_records)  # bitwise, once


def test_sigterm_saves_the_current_step_and_the_rerun_reproduces_the_losses(reference, tmp_path,
                                                                              capsys):
    _, reference_records, _ = reference
    workdir = tmp_path / "preempted"
    status, stderr = _signal_mid_run(workdir, signal.SIGTERM)
    stopped_at = max(r["step"] for r in _records(workdir))
    assert status == 128 + signal.SIGTERM, stderr[-2000:]
    assert f"imro: stopped by SIGTERM after step {stopped_at}; its checkpoint is saved" in stderr
    assert 7 <= stopped_at < NUM_STEPS
    ckpt = checkpoint_lib.Checkpointer(workdir / "checkpoints", keep_last=2)
    assert ckpt.steps()[-1] == stopped_at  # saved and committed before exiting, not lost
    ckpt.close()
    assert _resume_in_process(workdir, capsys) == stopped_at
    assert _train_losses(_records(workdir)) == _train_losses(reference_records)  # bitwise, once


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("localhost", 0))
        return sock.getsockname()[1]


def _start_two_processes(workdir, **env) -> list[subprocess.Popen]:
    address = f"localhost:{_free_port()}"
    return [
        subprocess.Popen(
            toy_run_command(workdir, *_cli_overrides(), "--config.mesh.num_processes=2",
                            f"--config.mesh.process_id={i}",
                            f"--config.mesh.coordinator_address={address}"),
            env=dict(subprocess_env(cpu_devices=4), **env), stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE)
        for i in range(2)
    ]


def _finish(processes, timeout=300) -> list[str]:
    """Waits for every process; returns their stderr (kills what is left on a timeout)."""
    try:
        return [p.communicate(timeout=timeout)[1].decode() for p in processes]
    finally:
        for p in processes:
            if p.poll() is None:
                p.kill()
                p.wait()


def test_two_processes_match_the_single_process_run(reference, tmp_path):
    _, reference_records, _ = reference
    workdir = tmp_path / "multihost"
    processes = _start_two_processes(workdir)
    errors = _finish(processes)
    assert [p.returncode for p in processes] == [0, 0], errors[0][-3000:] + errors[1][-3000:]
    records = _records(workdir)
    got, expected = _train_losses(records), _train_losses(reference_records)
    assert sorted(got) == sorted(expected)
    np.testing.assert_allclose([got[s] for s in sorted(got)], [expected[s] for s in sorted(got)],
                               rtol=0, atol=1e-5)
    evals = [r["eval/accuracy"] for r in records if "eval/accuracy" in r]
    assert evals == [r["eval/accuracy"] for r in reference_records if "eval/accuracy" in r]
    data_files = sorted(p.name for p in (workdir / "checkpoints" / "12" / "data").iterdir()
                        if p.suffix == ".json")
    assert data_files == ["process_0-of-2.json", "process_1-of-2.json"]


def test_sigterm_to_one_of_two_processes_saves_the_same_step_on_both(tmp_path):
    workdir = tmp_path / "multihost_preempted"
    processes = _start_two_processes(workdir, IMRO_TEST_BATCH_DELAY="0.25")
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and all(p.poll() is None for p in processes):
        if (workdir / "metrics.jsonl").exists() and any(r["step"] >= 5 for r in _records(workdir)):
            break
        time.sleep(0.05)
    processes[1].send_signal(signal.SIGTERM)  # JAX's preemption notifier tells process 0
    errors = _finish(processes, timeout=120)
    assert [p.returncode for p in processes] == [143, 143], errors[0][-3000:] + errors[1][-3000:]
    steps = {int(e.split("stopped by SIGTERM after step ")[1].split(";")[0]) for e in errors}
    (stopped_at,) = steps  # the same step on both processes
    assert 5 <= stopped_at < NUM_STEPS
    data_files = sorted(p.name for p in (workdir / "checkpoints" / str(stopped_at) / "data").iterdir()
                        if p.suffix == ".json")
    assert data_files == ["process_0-of-2.json", "process_1-of-2.json"]
