"""Configs shipped with the package, usable by name: `imro train --config trimodal`.

| name | what it trains |
|---|---|
| `trimodal` | tri-modal (text + vision + audio) IMRO on `imro_synth`; every key is documented there |
| `handwritten` | six-view IMRO on UCI Handwritten (Multiple Features) |
| `synth_caption` | caption generation on `imro_synth` |

`experiments/configs/<name>.py` in a checkout re-exports these, so both spellings work.
"""

import importlib.resources
import pathlib

from imro_jax.train.config import ConfigError


def names() -> list[str]:
    """The names of the configs shipped in this package, sorted."""
    files = importlib.resources.files(__name__).iterdir()
    return sorted(f.name[:-3] for f in files if f.name.endswith(".py") and not f.name.startswith("_"))


def path(name_or_path: str | pathlib.Path) -> pathlib.Path:
    """The config file for a shipped config's name, or `name_or_path` itself if it is a file.

    Args:
        name_or_path: `"trimodal"` (a name from `names()`) or the path of any config file.

    Returns:
        A path that `imro_jax.train.load_config` reads.

    Raises:
        ConfigError: neither an existing file nor a shipped config's name.
    """
    candidate = pathlib.Path(name_or_path)
    if candidate.is_file():
        return candidate
    if str(name_or_path) in names():
        return pathlib.Path(str(importlib.resources.files(__name__) / f"{name_or_path}.py"))
    raise ConfigError(
        f"config {str(name_or_path)!r} is neither a file nor a shipped config "
        f"(shipped: {', '.join(names())})"
    )
