"""The progress display (plain lines, tqdm bars, the compiling line, an ETA without compilation)."""

import fcntl
import os
import pty
import struct
import sys
import termios
import types

import pytest

from imro_jax.train import reporting


class FakeClock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


@pytest.mark.parametrize("seconds,text", [(5.4, "5s"), (75.2, "1m15s"), (3700, "1h01m"),
                                          (float("inf"), "?")])
def test_format_duration(seconds, text):
    assert reporting.format_duration(seconds) == text


def test_plain_lines_give_an_eta_that_leaves_compilation_out(capsys):
    clock = FakeClock()
    durations = iter([40.0, 1.0, 1.0, 1.0, 1.0])  # step 1 compiles for 40 s, then 1 s per step

    def train_step(state, batch):
        clock.now += next(durations)
        return state + 1, {}

    progress = reporting.Progress(total=10, start=0, mode="lines", clock=clock)
    step_fn = reporting.announce_compilation(train_step, progress)
    clock.now, state = 1.0, 0
    for _ in range(5):
        state, _ = step_fn(state, None)
    progress.update(5, 0.123456, 2.0)
    progress.close()
    assert capsys.readouterr().out.splitlines() == [
        "compiling the train step...",
        "step 1 compiled and ran in 40s",
        "step 5/10  loss 0.1235  2.00 steps/s  ETA 5s",  # 5 steps left at 1 step/s, not 5 x 44/5 s
    ]


def test_the_compiling_line_comes_before_the_first_step_runs(capsys):
    progress = reporting.Progress(total=3, start=0, mode="lines")
    seen = []

    def train_step(state, batch):
        seen.append(capsys.readouterr().out)
        return state + 1, {}

    step_fn = reporting.announce_compilation(train_step, progress)
    state = 0
    for _ in range(3):
        state, _ = step_fn(state, None)
    assert state == 3
    # Only the first call announces, before it runs; the second sees the "compiled" line.
    assert seen[0] == "compiling the train step...\n" and seen[2] == ""
    assert seen[1].startswith("step 1 compiled and ran in ")


def test_eta_is_infinite_until_a_step_after_the_reference_is_done():
    assert reporting.eta_seconds(4, 10, since_step=4, since_time=2.0, now=9.0) == float("inf")
    assert reporting.eta_seconds(6, 10, since_step=4, since_time=2.0, now=6.0) == pytest.approx(8.0)


def test_bar_shows_step_and_loss_on_stderr(capsys):
    progress = reporting.Progress(total=10, start=2, mode="bar")
    progress.update(5, 0.123456, 2.0)
    progress.message("resumed")
    progress.close()
    captured = capsys.readouterr()
    assert "5/10" in captured.err and "loss=0.1235" in captured.err
    assert "resumed" in captured.out + captured.err


def _pty_with_columns(columns: int):
    leader, follower = pty.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 24, columns, 0, 0))
    return leader, os.fdopen(follower, "w")


@pytest.mark.parametrize("columns,mode", [(80, "bar"), (0, "lines")])
def test_a_zero_width_terminal_gets_plain_lines(columns, mode):
    leader, stream = _pty_with_columns(columns)
    try:
        assert stream.isatty()
        assert reporting.display_mode(stream) == mode
    finally:
        stream.close()
        os.close(leader)


def test_a_pipe_gets_plain_lines_and_a_notebook_kernel_gets_tqdm_auto(monkeypatch):
    read, write = os.pipe()
    with os.fdopen(read) as r, os.fdopen(write, "w") as w:
        del r
        assert reporting.display_mode(w) == "lines"
    shell = types.SimpleNamespace(kernel=object())  # what IPython.get_ipython() is in a kernel
    monkeypatch.setitem(sys.modules, "IPython", types.SimpleNamespace(get_ipython=lambda: shell))
    assert reporting.display_mode(sys.stderr) == "notebook"


def test_unknown_mode_is_an_error():
    with pytest.raises(ValueError, match="progress mode must be bar, notebook or lines, got 'tty'"):
        reporting.Progress(total=1, start=0, mode="tty")
