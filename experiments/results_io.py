"""The results formatting shared by the experiments and the benchmarks (numpy-free, data-free).

`markdown_table` is the one table formatter; `replace_section` keeps one `## <title> (...)`
section per title in a markdown log such as `experiments/bench/RESULTS.md`, so the file holds
the latest result of each benchmark and git holds the history; `repo_relative` writes paths
relative to the repository, never the machine's absolute paths.
"""

from __future__ import annotations

import pathlib
from collections.abc import Sequence
from typing import Any

REPO = pathlib.Path(__file__).resolve().parents[1]


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A GitHub markdown table."""
    lines = ["| " + " | ".join(map(str, header)) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(map(str, row)) + " |" for row in rows]
    return "\n".join(lines)


def repo_relative(path: str | pathlib.Path) -> str:
    """`path` relative to the repository root, or as given when it lies outside it."""
    try:
        return str(pathlib.Path(path).resolve().relative_to(REPO))
    except ValueError:
        return str(path)


def replace_section(path: str | pathlib.Path, title: str, section: str) -> None:
    """Writes `section` (starting `## <title> (`) into the markdown file `path`, in place of the
    section of the same title if there is one, else at the end (the preamble is kept)."""
    path = pathlib.Path(path)
    text = path.read_text() if path.exists() else ""
    head, *sections = text.split("\n## ")
    prefix = f"{title} ("
    body = section.removeprefix("## ").rstrip() + "\n"
    kept = [s.rstrip() + "\n" for s in sections]
    index = next((i for i, s in enumerate(kept) if s.startswith(prefix)), None)
    if index is None:
        kept.append(body)
    else:
        kept[index] = body
    path.write_text("\n## ".join([head.rstrip() + "\n", *kept]))
