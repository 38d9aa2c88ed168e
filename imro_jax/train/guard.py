"""Run-level guards on the per-step metrics: invalid data and too many skipped steps.

A loss may report per-step counts `invalid/<name>` (samples dropped because modality `<name>`
or the `label` was non-finite or out of range). The loop keeps the counts of the steps since
its last check and, at every logging step and before every checkpoint, calls `check`:

    invalid/<name> > 0 at step t, name in task.fatal_invalid  ->  InvalidDataError naming t
    skipped > max_skipped_fraction * step   (from step MIN_STEPS on) ->  TrainingError

so a bad batch never reaches a checkpoint, and a run whose updates keep being skipped stops.
"""

import jax

INVALID_PREFIX = "invalid/"
DEFAULT_MAX_SKIPPED_FRACTION = 0.5  # `train.max_skipped_fraction` when the config has none
MIN_STEPS = 10  # the skipped share is judged from this step on (and at the last step)


class TrainingError(RuntimeError):
    """Training cannot usefully go on (message is one line)."""


class InvalidDataError(TrainingError):
    """A training batch held samples the policy does not allow (message is one line)."""


def max_skipped_fraction(train_config) -> float:
    """`train.max_skipped_fraction`, or the default for configs written before it existed."""
    if "max_skipped_fraction" in train_config:
        return float(train_config.max_skipped_fraction)
    return DEFAULT_MAX_SKIPPED_FRACTION


def invalid_counts(metrics: dict) -> dict:
    """The `invalid/<name>` entries of a step's metrics (device arrays, not fetched)."""
    return {k: v for k, v in metrics.items() if k.startswith(INVALID_PREFIX)}


def describe_invalid(host_metrics: dict) -> str:
    """`"invalid samples: audio 3, label 1"`, or "" when there are none."""
    counts = {k.removeprefix(INVALID_PREFIX): int(v) for k, v in host_metrics.items()
              if k.startswith(INVALID_PREFIX) and v}
    return ("invalid samples: " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items()))
            if counts else "")


class Monitor:
    """Collects each step's invalid counts and skipped total; `check` raises on a violation.

    Args:
        fatal: names whose invalid samples stop the run.
        max_skipped: the largest allowed share of skipped steps.
        last_step: the run's last step (always judged).
    """

    def __init__(self, fatal: tuple[str, ...], max_skipped: float, last_step: int):
        self._fatal = {INVALID_PREFIX + name for name in fatal}
        self._max_skipped, self._last_step = max_skipped, last_step
        self._pending: list[tuple[int, dict]] = []

    def add(self, step: int, metrics: dict) -> None:
        watched = {k: v for k, v in invalid_counts(metrics).items() if k in self._fatal}
        self._pending.append((step, dict(watched, skipped=metrics["skipped"])))

    def check(self) -> None:
        """Fetches the collected counts and raises on the first violation.

        Raises:
            InvalidDataError: a fatal invalid count > 0 (names the step and the modality).
            TrainingError: too many skipped steps.
        """
        pending, self._pending = jax.device_get(self._pending), []
        for step, counts in pending:
            for key, count in sorted(counts.items()):
                if key != "skipped" and count:
                    name = key.removeprefix(INVALID_PREFIX)
                    what = "labels out of range" if name == "label" else (
                        f"modality {name!r} non-finite or out of range")
                    raise InvalidDataError(
                        f"training batch of step {step}: {int(count)} samples with {what}; "
                        "clean the data, or set model.nonfinite='as_missing' to drop "
                        "non-finite modalities"
                    )
        if pending:
            step, counts = pending[-1]
            self._check_skipped(step, int(counts["skipped"]))

    def _check_skipped(self, step: int, skipped: int) -> None:
        if (step >= MIN_STEPS or step == self._last_step) and skipped > self._max_skipped * step:
            raise TrainingError(
                f"{skipped} of the first {step} steps were skipped (non-finite loss, gradient or "
                f"update, or no valid sample), more than train.max_skipped_fraction="
                f"{self._max_skipped}; lower optimizer.learning_rate or check the data"
            )
