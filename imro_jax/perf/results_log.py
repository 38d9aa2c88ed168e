"""A benchmark's section of a markdown results log: its table, and what ran where under what load.

    report = Report("IMRO overhead", "experiments/bench/RESULTS.md", root=REPO)  # date, command, load
    ...
    report.finish(table, notes=[...])  # load at the end, wall time; printed, and written to the log

The log keeps the latest section of each title (`imro_jax.eval.results_files.replace_section`; the
history is in git). A section names the command with the script's path relative to `root` (no
absolute path of the machine), the machine, the software versions, the 1-minute load average at
start and end, and the wall time.
"""

from __future__ import annotations

import datetime
import os
import sys
import time
from collections.abc import Sequence

from imro_jax.eval import results_files
from imro_jax.perf.machine import load_average, machine_info


class Report:
    """Collects a benchmark's table and notes; prints them and writes them to the results log.

    Args:
        title: the section's title (`## <title> (<date>)`); a later run replaces the section.
        results: the markdown log; "" or None: print only.
        root: the repository root the command's script path is written relative to.
    """

    def __init__(self, title: str, results: str | os.PathLike | None, root: str | os.PathLike):
        self.title, self.results = title, results
        self.command = "python " + " ".join([results_files.repo_relative(sys.argv[0], root)] + sys.argv[1:])
        self.date = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
        self.load_start = load_average()
        self.start = time.perf_counter()

    def finish(self, table: str, notes: Sequence[str] = ()) -> str:
        """The section (title, command, machine, software, load, notes as bullets, then `table`),
        printed and written to the log; returns it."""
        info = machine_info()
        lines = [
            f"## {self.title} ({self.date})",
            "",
            f"- command: `{self.command}`",
            f"- machine: {info['cpu']}; {info['devices']}",
            f"- software: Python {info['python']}, {info['versions']}",
            f"- load average (1 min) at start / end: {self.load_start:.2f} / {load_average():.2f}; "
            f"wall time {time.perf_counter() - self.start:.0f} s",
            *[f"- {note}" for note in notes],
            "",
            table,
            "",
        ]
        text = "\n".join(lines)
        print(text, flush=True)
        if self.results:
            results_files.replace_section(self.results, self.title, text)
        return text
