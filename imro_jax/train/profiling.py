"""A `jax.profiler` trace of chosen train steps (`config.train.profile_steps`).

`train.profile_steps = (first, last)` traces steps `first..last` (inclusive) of a run into
`workdir/profile`; each step is a `jax.profiler.StepTraceAnnotation("train", step_num=step)`, so
the trace viewer groups the ops by step. `()` traces nothing. Pick steps after the first: step 1
of a run also holds the compilation. Open the trace with TensorBoard's profile plugin
(`pip install tensorboard tensorboard-plugin-profile`, then `tensorboard --logdir workdir/profile`)
or drop `workdir/profile/plugins/profile/*/*.trace.json.gz` on https://ui.perfetto.dev.
"""

from collections.abc import Callable, Sequence

import jax
from etils import epath

from imro_jax.train.config import ConfigError


def check_profile_steps(profile_steps: Sequence[int], num_steps: int) -> tuple[int, int] | None:
    """`(first, last)` from `train.profile_steps`, or None for `()`.

    Raises:
        ConfigError: not `()` nor two steps `1 <= first <= last <= num_steps`.
    """
    steps = tuple(profile_steps)
    if not steps:
        return None
    if len(steps) != 2 or not all(isinstance(s, int) for s in steps):
        raise ConfigError(f"train.profile_steps must be () or (first, last), got {steps}")
    first, last = steps
    if not 1 <= first <= last <= num_steps:
        raise ConfigError(
            f"train.profile_steps {steps} must satisfy 1 <= first <= last <= train.num_steps "
            f"({num_steps})"
        )
    return first, last


class ProfiledStep:
    """`train_step` with each call annotated as a step, and steps `profile_steps` traced.

    Args:
        train_step: `(state, batch) -> (state, metrics)`.
        profile_steps: `()` or `(first, last)`, see the module docstring.
        first_step: the step number of the first call (the run's start step + 1).
        num_steps: the run's last step.
        log_dir: where `jax.profiler` writes the trace.
        message: prints a line (the progress display's).

    Calling it runs one step. The trace stops once step `last` has finished; a run that ends or
    fails inside the range stops it with `stop()` (call it in a `finally`).
    """

    def __init__(self, train_step: Callable, profile_steps: Sequence[int], *, first_step: int,
                 num_steps: int, log_dir: epath.PathLike,
                 message: Callable[[str], None] = print):
        self._train_step, self._log_dir, self._message = train_step, log_dir, message
        self._window = check_profile_steps(profile_steps, num_steps)
        self._step, self._tracing = first_step, False

    def __call__(self, state, batch):
        step, window = self._step, self._window
        self._step += 1
        if window and step == window[0]:
            jax.profiler.start_trace(str(self._log_dir), create_perfetto_trace=True)
            self._tracing = True
        with jax.profiler.StepTraceAnnotation("train", step_num=step):
            outputs = self._train_step(state, batch)
        if self._tracing and step == window[1]:
            jax.block_until_ready(outputs)
            self.stop()
        return outputs

    def stop(self) -> None:
        """Ends the trace if one is running."""
        if self._tracing:
            jax.profiler.stop_trace()
            self._tracing = False
            first, last = self._window
            self._message(f"profile of steps {first}..{last} written to {self._log_dir}")
