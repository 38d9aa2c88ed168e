"""Preemption: SIGTERM / SIGINT end a run at a step boundary, after a checkpoint of that step.

    one process    a Python handler for SIGTERM and SIGINT records the signal; the loop asks
                   `reached(step)` after every step and, once True, saves that step, waits for
                   the save to commit and raises `Preempted`
    several        JAX's preemption sync manager (started by `jax.distributed.initialize`)
                   receives SIGTERM and agrees on one step for all processes:
                   `multihost_utils.reached_preemption_sync_point(step)`, asked at every step,
                   is True on every process at that same step, so all of them save it
                   (no Python handler is installed there: it would replace JAX's)

The CLI exits with `128 + signal number` (143 for SIGTERM, 130 for SIGINT), the status a shell
reports for a process ended by that signal, after the checkpoint is committed. A second signal
before that acts at once (SIGINT raises KeyboardInterrupt, SIGTERM ends the process).
"""

import os
import signal
import threading

import jax
from jax.experimental import multihost_utils

SIGNALS = (signal.SIGTERM, signal.SIGINT)


class Preempted(Exception):
    """The run stopped at `step` on a signal after saving (and committing) that step."""

    def __init__(self, step: int, signum: int):
        self.step, self.signum = step, signum
        super().__init__(
            f"stopped by {signal.Signals(signum).name} after step {step}; its checkpoint is "
            "saved, rerun the same command to resume"
        )

    @property
    def exit_status(self) -> int:
        return 128 + self.signum


class Watch:
    """Watches for a preemption request; use as a context manager around the train loop."""

    def __init__(self):
        self.signum: int | None = None
        self._previous = {}

    def __enter__(self) -> "Watch":
        if jax.process_count() == 1 and threading.current_thread() is threading.main_thread():
            for signum in SIGNALS:
                self._previous[signum] = signal.signal(signum, self._record)
        return self

    def __exit__(self, *exc) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous.clear()

    def _record(self, signum, frame) -> None:
        """The first signal asks for a stop at the next step boundary; a second one acts at once
        (as it would without this handler), e.g. for a run stuck before its first step."""
        if self.signum is None:
            self.signum = signum
            return
        previous = self._previous.get(signum, signal.SIG_DFL)
        if callable(previous):
            previous(signum, frame)
        else:
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)

    def reached(self, step: int) -> bool:
        """True once the run should save `step` and stop (the same step on every process)."""
        if jax.process_count() == 1:
            return self.signum is not None
        try:
            reached = multihost_utils.reached_preemption_sync_point(step)
        except RuntimeError:  # the preemption service is disabled (jax_enable_preemption_service)
            return False
        if reached:
            self.signum = signal.SIGTERM
        return reached
