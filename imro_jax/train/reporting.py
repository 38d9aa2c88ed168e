"""What a run reports: `metrics.jsonl`, the resolved config, and progress on the terminal.

Only process 0 writes. On an interactive terminal progress is a tqdm bar (step, loss, steps/s,
ETA); otherwise (logs, CI, batch jobs) it is one plain line per logging step.
"""

import json
import math
import sys
import time

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


class MetricsWriter:
    """Appends one JSON object per line to `path`.

    Args:
        path: the `metrics.jsonl` file.
        resume_step: records with `step > resume_step` are dropped first, so a resumed run does
            not leave the lines of steps it re-runs after its last checkpoint.
    """

    def __init__(self, path: epath.Path, *, resume_step: int):
        self.path = path
        if not is_primary() or not path.exists():
            return
        kept = [
            line for line in path.read_text().splitlines()
            if line.strip() and json.loads(line)["step"] <= resume_step
        ]
        path.write_text("".join(line + "\n" for line in kept))

    def write(self, record: dict) -> None:
        """Appends `record` (must contain "step"); values are converted to floats/ints."""
        if not is_primary():
            return
        with self.path.open("a") as f:
            f.write(json.dumps(record, sort_keys=True) + "\n")


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


class Progress:
    """Step / loss / steps-per-second / ETA display.

    Args:
        total: last step of the run.
        start: step the run (re)starts from.
        interactive: tqdm bar if True, plain lines if False (default: stderr is a TTY).
    """

    def __init__(self, total: int, start: int, interactive: bool | None = None):
        self.total, self.start = total, start
        self.interactive = sys.stderr.isatty() if interactive is None else interactive
        self._start_time = time.perf_counter()
        self._bar = None
        if is_primary() and self.interactive:
            from tqdm import tqdm

            self._bar = tqdm(total=total, initial=start, dynamic_ncols=True, unit="step")

    def update(self, step: int, loss: float, steps_per_s: float) -> None:
        """Reports the state after `step`."""
        if not is_primary():
            return
        if self._bar is not None:
            self._bar.update(step - self._bar.n)
            self._bar.set_postfix(loss=f"{loss:.4f}")
            return
        eta = (self.total - step) / steps_per_s if steps_per_s > 0 else math.inf
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
