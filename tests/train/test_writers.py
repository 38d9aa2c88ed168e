"""metrics.jsonl (also on an object store without append), TensorBoard event files, W&B."""

import json
import pathlib
import struct
import sys
import types

import pytest
from etils import epath
from etils.epath import testing as epath_testing

from imro_jax.train import writers
from imro_jax.train.config import ConfigError


class FakeClock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def _steps(path):
    return [json.loads(line)["step"] for line in epath.Path(path).read_text().splitlines()]


def test_resumed_run_drops_the_lines_of_steps_it_will_redo(tmp_path):
    path = tmp_path / "metrics.jsonl"
    writer = writers.JsonlWriter(path, resume_step=0)
    for step in range(1, 6):
        writer.write({"step": step, "loss": 1.0 / step})
    writer.write({"step": 5, "eval/accuracy": 0.5})
    writer.close()
    resumed = writers.JsonlWriter(path, resume_step=3)
    assert _steps(path) == [1, 2, 3]  # dropped at once, before any new line
    resumed.write({"step": 4, "loss": 0.0})
    resumed.close()
    assert _steps(path) == [1, 2, 3, 4]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["metrics.jsonl"]  # no temporary file left


def test_lines_reach_the_file_at_flush_or_after_the_interval(tmp_path):
    clock, path = FakeClock(), tmp_path / "metrics.jsonl"
    writer = writers.JsonlWriter(path, resume_step=0, flush_every_s=30.0, clock=clock)
    writer.write({"step": 1, "loss": 1.0})  # the first line is written at once
    clock.now = 10.0
    writer.write({"step": 2, "loss": 0.5})
    assert _steps(path) == [1]
    writer.flush()
    assert _steps(path) == [1, 2]
    clock.now = 20.0
    writer.write({"step": 3, "loss": 0.2})
    assert _steps(path) == [1, 2]
    clock.now = 41.0  # 31 s after the last flush
    writer.write({"step": 4, "loss": 0.1})
    assert _steps(path) == [1, 2, 3, 4]


class ObjectStore:
    """A `gs://` bucket as epath sees it: whole objects only (no append mode), and renames."""

    def __init__(self):
        self.objects: dict[str, bytes] = {}

    def open(self, _, path, mode="r"):
        path, store = str(path), self

        class Upload(bytearray):
            def __enter__(self):
                return self

            def __exit__(self, *exc):
                store.objects[path] = bytes(self)

            def write(self, data):
                self.extend(data.encode() if isinstance(data, str) else data)
                return len(data)

        if "a" in mode or "+" in mode:
            raise OSError(f"object stores cannot {mode!r} {path}")
        if "w" in mode:
            return Upload()
        import io
        data = self.objects[path]
        return io.BytesIO(data) if "b" in mode else io.StringIO(data.decode())

    def exists(self, _, path):
        return str(path) in self.objects

    def replace(self, _, path, dst):
        self.objects[str(dst)] = self.objects.pop(str(path))

    def mocks(self):
        return dict(open=self.open, exists=self.exists, replace=self.replace, rename=self.replace)


def test_metrics_jsonl_on_a_gs_workdir_needs_no_append():
    store = ObjectStore()
    with epath_testing.mock_epath(**store.mocks()):
        path = epath.Path("gs://bucket/run/metrics.jsonl")
        writer = writers.JsonlWriter(path, resume_step=0)
        for step in (1, 2, 3):
            writer.write({"step": step, "loss": float(step)})
        writer.close()
        resumed = writers.JsonlWriter(path, resume_step=2)
        resumed.write({"step": 3, "loss": 0.0})
        resumed.close()
    lines = store.objects["gs://bucket/run/metrics.jsonl"].decode().splitlines()
    assert [json.loads(line) for line in lines] == [
        {"step": 1, "loss": 1.0}, {"step": 2, "loss": 2.0}, {"step": 3, "loss": 0.0}]
    assert list(store.objects) == ["gs://bucket/run/metrics.jsonl"]


def read_events(logdir):
    """Every `Event` in the TFRecord files under `logdir`, checking lengths and CRC fields."""
    from tensorboardX.proto import event_pb2

    events = []
    for path in sorted(pathlib.Path(logdir).glob("events.out.tfevents.*")):
        data, offset = path.read_bytes(), 0
        while offset < len(data):
            (length,) = struct.unpack("<Q", data[offset:offset + 8])
            payload = data[offset + 12:offset + 12 + length]
            assert len(payload) == length, f"truncated record in {path}"
            events.append(event_pb2.Event.FromString(payload))
            offset += 12 + length + 4
    return events


def _scalars(events):
    return {(v.tag, e.step): v.simple_value for e in events for v in e.summary.value}


def test_tensorboard_event_files_hold_the_scalars_per_step(tmp_path):
    run = writers.make_writers(("tensorboard",), tmp_path, resume_step=0)
    run.write({"step": 1, "loss": 0.5, "reliability/text": 0.25, "note": "skipped"})
    run.write({"step": 2, "loss": 0.25, "eval/accuracy": 0.75})
    run.close()
    assert _scalars(read_events(tmp_path / "tensorboard")) == {
        ("loss", 1): 0.5, ("reliability/text", 1): 0.25, ("loss", 2): 0.25,
        ("eval/accuracy", 2): 0.75,
    }
    assert _steps(tmp_path / "metrics.jsonl") == [1, 2]


def test_a_resumed_tensorboard_run_tells_tensorboard_to_drop_the_redone_steps(tmp_path):
    first = writers.make_writers(("tensorboard",), tmp_path, resume_step=0)
    first.write({"step": 6, "loss": 1.0})
    first.close()
    writers.make_writers(("tensorboard",), tmp_path, resume_step=6).close()
    assert _scalars(read_events(tmp_path / "tensorboard")) == {("loss", 6): 1.0}  # kept
    starts = [e.step for e in read_events(tmp_path / "tensorboard")
              if e.HasField("session_log") and e.session_log.status == e.session_log.START]
    assert starts == [7]  # TensorBoard purges the earlier events from step 7 on


def test_without_wandb_installed_the_wandb_writer_is_skipped_with_a_message(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "wandb", None)  # `import wandb` raises ImportError
    messages = []
    run = writers.make_writers(("wandb",), tmp_path, resume_step=0, message=messages.append)
    assert [type(w).__name__ for w in run.writers] == ["JsonlWriter"]
    assert messages == ["wandb is not installed: W&B logging is off (pip install wandb)"]


def test_wandb_writer_logs_the_numeric_entries_at_their_step(tmp_path, monkeypatch):
    calls = []
    fake_run = types.SimpleNamespace(log=lambda data, step: calls.append((step, data)),
                                     finish=lambda: calls.append("finish"))

    def init(**kwargs):
        calls.append(("init", kwargs["dir"], kwargs["resume"], kwargs["config"]))
        return fake_run

    monkeypatch.setitem(sys.modules, "wandb", types.SimpleNamespace(init=init))
    run = writers.make_writers(("wandb",), tmp_path, resume_step=0, config={"seed": 0})
    run.write({"step": 3, "loss": 0.5, "note": "text"})
    run.close()
    assert calls == [("init", str(tmp_path), "allow", {"seed": 0}), (3, {"loss": 0.5}), "finish"]


def test_an_unknown_writer_is_an_error_that_names_the_known_ones(tmp_path):
    with pytest.raises(ConfigError, match=r"unknown writer\(s\) \['tensorbord'\]; known: "
                                         r"\['tensorboard', 'wandb'\]"):
        writers.make_writers(("tensorbord",), tmp_path, resume_step=0)
