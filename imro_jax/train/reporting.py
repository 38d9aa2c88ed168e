"""What a run reports on screen (progress, the compiling line) and its resolved config.

Only process 0 writes. On a terminal and in a notebook progress is a tqdm bar (step, loss,
steps/s, ETA); otherwise (logs, CI, batch jobs, a zero-width terminal) it is one plain line per
logging step. Metrics files are written by `imro_jax.train.writers`.
"""

import math
import os
import sys
import time
from collections.abc import Callable

import jax
import ml_collections
from etils import epath


def is_primary() -> bool:
    """True on the process that writes logs and files (process 0)."""
    return jax.process_index() == 0


def save_config(config: ml_collections.ConfigDict, workdir: epath.Path) -> None:
    """Writes the resolved config (after overrides) to `workdir/config.json`."""
    if is_primary():
        (workdir / "config.json").write_text(config.to_json_best_effort(indent=2, sort_keys=True))


def format_duration(seconds: float) -> str:
    """`75.2 -> "1m15s"`, `3700 -> "1h01m"`."""
    if not math.isfinite(seconds):
        return "?"
    seconds = int(round(seconds))
    if seconds >= 3600:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    if seconds >= 60:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds}s"


def display_mode(stream=None) -> str:
    """How progress can be shown on `stream` (default stderr).

    Returns:
        `"notebook"` inside a Jupyter/Colab kernel (a `tqdm.auto` bar), `"bar"` on a terminal
        at least one column wide (a tqdm bar), else `"lines"` (plain periodic lines: logs, CI,
        batch jobs, a zero-width pseudo-terminal where a bar would print nothing).
    """
    stream = sys.stderr if stream is None else stream
    ipython = sys.modules.get("IPython")
    shell = ipython.get_ipython() if ipython is not None else None
    if shell is not None and hasattr(shell, "kernel"):
        return "notebook"
    try:
        usable = stream.isatty() and os.get_terminal_size(stream.fileno()).columns > 0
    except (AttributeError, OSError, ValueError):
        usable = False
    return "bar" if usable else "lines"


def eta_seconds(step: int, total: int, since_step: int, since_time: float, now: float) -> float:
    """Seconds left at `step` of `total`, at the mean rate since (`since_step`, `since_time`).

    The reference point is the end of the first (compiling) step, so compilation is left out.
    Returns `inf` when no step has completed since it.
    """
    done, elapsed = step - since_step, now - since_time
    if done <= 0 or elapsed <= 0:
        return math.inf
    return (total - step) * elapsed / done


class Progress:
    """Step / loss / steps-per-second / ETA display, and the "compiling the train step..." line.

    Args:
        total: last step of the run.
        start: step the run (re)starts from.
        mode: `"bar"`, `"notebook"` (tqdm bars) or `"lines"` (plain lines, one per logging
            step); default `display_mode()`.
        clock: time source in seconds (tests pass a fake one).
    """

    def __init__(self, total: int, start: int, mode: str | None = None,
                 clock: Callable[[], float] = time.perf_counter):
        self.total, self.start = total, start
        self.mode = display_mode() if mode is None else mode
        if self.mode not in ("bar", "notebook", "lines"):
            raise ValueError(f"progress mode must be bar, notebook or lines, got {self.mode!r}")
        self._clock = clock
        self._origin = (start, clock())  # (step, time) the ETA is measured from
        self._bar = None
        self._compile_started: float | None = None

    def _open_bar(self, step: int) -> None:
        if is_primary() and self.mode != "lines" and self._bar is None:
            from tqdm.auto import tqdm

            self._bar = tqdm(total=self.total, initial=step, dynamic_ncols=True, unit="step")

    def compiling(self) -> None:
        """Says that the first step is being compiled (it takes seconds to minutes)."""
        self.message("compiling the train step...")
        self._compile_started = self._clock()

    def compiled(self, step: int) -> None:
        """Marks the end of the first (compiling) step: the ETA is measured from here."""
        now = self._clock()
        started = self._origin[1] if self._compile_started is None else self._compile_started
        self.message(f"step {step} compiled and ran in {format_duration(now - started)}")
        self._origin = (step, now)
        self._open_bar(step)

    def update(self, step: int, loss: float, steps_per_s: float) -> None:
        """Reports the state after `step`."""
        if not is_primary():
            return
        self._open_bar(self._origin[0])
        if self._bar is not None:
            self._bar.update(step - self._bar.n)
            self._bar.set_postfix(loss=f"{loss:.4f}")
            return
        eta = eta_seconds(step, self.total, *self._origin, self._clock())
        print(
            f"step {step}/{self.total}  loss {loss:.4f}  {steps_per_s:.2f} steps/s  "
            f"ETA {format_duration(eta)}",
            flush=True,
        )

    def message(self, text: str) -> None:
        """Prints a line without breaking the bar."""
        if not is_primary():
            return
        if self._bar is not None:
            self._bar.write(text)
        else:
            print(text, flush=True)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()


def announce_compilation(train_step: Callable, progress: Progress) -> Callable:
    """`train_step` that prints "compiling the train step..." around its first call.

    The first call compiles; it is waited for, so the ETA that `progress` shows afterwards is
    measured from the end of compilation.
    """
    first = [True]

    def step_fn(state, batch):
        if not first[0]:
            return train_step(state, batch)
        first[0] = False
        progress.compiling()
        outputs = jax.block_until_ready(train_step(state, batch))
        progress.compiled(progress.start + 1)
        return outputs

    return step_fn
