"""Result files: a run's ``results.json`` / ``results.md`` / ``summary.json``, and a markdown log.

    write_results(out, payload, markdown, summary)   results.json (NaN as null), results.md,
                                                     and the small summary.json a README quotes
    summary_payload(command, seeds, methods)         that summary, rounded
    environment()                                    where and with what results were produced
    replace_section(path, title, section)            one ``## <title> (...)`` section per title
                                                     in a markdown log (the latest result; git
                                                     holds the history)
    repo_relative(path, root)                        a path as written into results: relative
                                                     to the repository, never the machine's
"""

from __future__ import annotations

import json
import math
import os
import pathlib
import platform
import time
from collections.abc import Mapping
from typing import Any

import jax
import ml_collections
import numpy as np

SUMMARY_KEYS = frozenset({"command", "seeds", "methods"})


def jsonable(value: Any) -> Any:
    """``value`` as plain JSON types: dict keys as strings, tuples and arrays as lists, numpy
    scalars as Python numbers, non-finite floats (NaN, inf) as None (JSON null), ConfigDicts as dicts,
    and an object with a ``to_json()`` method (e.g. ``imro_jax.eval.sweep.SweepResult``) as what it returns."""
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return jsonable(value.tolist())
    if isinstance(value, (np.floating, float)):
        return None if not math.isfinite(float(value)) else float(value)
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, ml_collections.ConfigDict):
        return jsonable(value.to_dict())
    if hasattr(value, "to_json"):
        return jsonable(value.to_json())
    return value


def environment() -> dict[str, Any]:
    """Where and with what the results were produced: versions, devices, machine, date."""
    return {
        "jax": jax.__version__,
        "devices": [str(d) for d in jax.devices()],
        "python": platform.python_version(),
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
    }


def summary_payload(command: str, seeds: int, methods: Mapping[str, Mapping[str, float | None]], *,
                    digits: int = 2, **extra: Any) -> dict[str, Any]:
    """The small committed summary of a result: every number a README quotes.

    Args:
      command: the command that reproduces the result.
      seeds: how many seeds it averages.
      methods: ``{method: {metric: value}}`` (accuracies in %).
      digits: decimals kept (the README's precision or finer); None and non-finite become None.
      **extra: further top-level entries, kept as given.

    Returns:
      ``{"command", "seeds", "methods": {method: {metric: rounded value}}, **extra}``.
    """
    rounded = {m: {k: (None if v is None or not math.isfinite(v) else round(float(v), digits))
                   for k, v in metrics.items()}
               for m, metrics in methods.items()}
    return {"command": command, "seeds": seeds, "methods": rounded, **extra}


def write_results(out: pathlib.Path, payload: dict, markdown: str, summary: dict | None = None) -> None:
    """Writes ``out/results.json`` (:func:`jsonable`: NaN as null), ``out/results.md`` and, given
    ``summary`` (:func:`summary_payload`), ``out/summary.json``; ``out`` is created if missing.

    Raises:
      ValueError: ``summary`` lacks one of :data:`SUMMARY_KEYS`.
    """
    out = pathlib.Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(jsonable(payload), indent=1, sort_keys=True))
    (out / "results.md").write_text(markdown.rstrip() + "\n")
    if summary is not None:
        missing = SUMMARY_KEYS - set(summary)
        if missing:
            raise ValueError(f"summary.json needs keys command, seeds, methods; missing {sorted(missing)}")
        (out / "summary.json").write_text(json.dumps(jsonable(summary), indent=1, sort_keys=True) + "\n")


def repo_relative(path: str | os.PathLike, root: str | os.PathLike) -> str:
    """``path`` relative to the repository root ``root``, or as given when it lies outside it.

    The caller names the root (e.g. its script's checkout), so no absolute machine path is
    written for a file inside the repository.
    """
    try:
        return str(pathlib.Path(path).resolve().relative_to(pathlib.Path(root).resolve()))
    except ValueError:
        return str(path)


def replace_section(path: str | os.PathLike, title: str, section: str) -> None:
    """Writes ``section`` (starting ``## <title> (``) into the markdown file ``path``.

    It takes the place of the section of the same title if there is one, else goes at the end;
    the preamble before the first ``## `` and the other sections are kept, so the file holds one
    section per title. A missing file is created.
    """
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
