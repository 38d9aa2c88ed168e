"""Loading `ml_collections` config files and applying overrides: the one override path.

A config file is a Python file with a `get_config() -> ml_collections.ConfigDict`. Overrides name
an existing key by its dotted path, either as command-line text (`--config.key=value`, parsed to
the type of the value it replaces: `apply_override`) or as Python values (`with_overrides`, used
by the experiments). Both check the same things: an unknown key, a section replaced by a value or
a value of the wrong type is a `ConfigError` whose message fits on one line (the CLI prints it as
is).
"""

import ast
import importlib.util
import pathlib
from collections.abc import Mapping
from typing import Any

import ml_collections


class ConfigError(ValueError):
    """A config file, key or value that cannot be used (message is one line)."""


def load_config_file(path: str | pathlib.Path) -> ml_collections.ConfigDict:
    """Imports `path` and returns its `get_config()`.

    Args:
        path: a Python file defining `get_config() -> ml_collections.ConfigDict`.

    Returns:
        The config it returns.

    Raises:
        ConfigError: the file is missing or has no `get_config`.
    """
    path = pathlib.Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    spec = importlib.util.spec_from_file_location(f"imro_config_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    if not hasattr(module, "get_config"):
        raise ConfigError(f"config file {path} defines no get_config()")
    return module.get_config()


def parse_override(text: str) -> tuple[str, str]:
    """Splits `--config.a.b=value` (or `a.b=value`) into (`"a.b"`, `"value"`)."""
    body = text.removeprefix("--config.")
    if "=" not in body:
        raise ConfigError(f"override {text!r} must look like --config.key=value")
    key, value = body.split("=", 1)
    if not key:
        raise ConfigError(f"override {text!r} names no key")
    return key, value


def _parse_value(key: str, text: str, current):
    """Parses `text` into the type of the value it replaces (`current`)."""
    if isinstance(current, bool):
        lowered = text.lower()
        if lowered in ("true", "1", "yes"):
            return True
        if lowered in ("false", "0", "no"):
            return False
        raise ConfigError(f"config key {key!r} expects a bool (true/false), got {text!r}")
    if isinstance(current, str):
        return text
    if isinstance(current, float) and text.strip().lower() in ("inf", "+inf", "-inf", "nan"):
        return float(text)  # parsed here, judged by the range checks (imro_jax.train.validate)
    try:
        value = ast.literal_eval(text)
    except (ValueError, SyntaxError):
        if current is None:  # an unset optional field: keep the text as a string
            return text
        raise ConfigError(
            f"config key {key!r} expects {type(current).__name__}, got {text!r}"
        ) from None
    return _checked_value(key, value, current, shown=repr(text))


def _checked_value(key: str, value: Any, current: Any, *, shown: str | None = None) -> Any:
    """`value` as the type of the value it replaces (`current`): an int for a float key becomes a
    float and lists for a tuple key tuples (nested too); a bool never counts as a number. An unset (None)
    key takes any value."""
    shown = shown or repr(value)
    if current is None:
        return value
    if isinstance(current, bool) != isinstance(value, bool):
        raise ConfigError(f"config key {key!r} expects {type(current).__name__}, got {shown}")
    if isinstance(current, float) and isinstance(value, int):
        return float(value)
    if isinstance(current, (tuple, list)) and isinstance(value, (tuple, list)):
        return _as_tuples(value)
    if not isinstance(value, type(current)):
        raise ConfigError(f"config key {key!r} expects {type(current).__name__}, got {shown}")
    return value


def _as_tuples(value: Any) -> Any:
    """Lists and tuples, nested, as tuples (a sequence key holds tuples however it was set)."""
    return tuple(_as_tuples(v) for v in value) if isinstance(value, (tuple, list)) else value


def _existing_leaf(config: ml_collections.ConfigDict, key: str) -> tuple[ml_collections.ConfigDict, str]:
    """The section holding the existing, non-section key `key` (dotted) and its last part."""
    *parents, leaf = key.split(".")
    node = config
    for depth, part in enumerate(parents):
        child = node.get(part) if isinstance(node, ml_collections.ConfigDict) else None
        if not isinstance(child, ml_collections.ConfigDict):
            where = ".".join(parents[: depth + 1])
            raise ConfigError(f"unknown config key {key!r}: {where!r} is not a config section")
        node = child
    if leaf not in node:
        known = ", ".join(sorted(node.keys()))
        raise ConfigError(f"unknown config key {key!r} (known here: {known})")
    if isinstance(node[leaf], ml_collections.ConfigDict):
        raise ConfigError(f"config key {key!r} is a section; set one of its keys instead")
    return node, leaf


def apply_override(config: ml_collections.ConfigDict, key: str, text: str) -> None:
    """Sets `config[key] = text` parsed to the type of the existing value, in place.

    Args:
        config: the config to change.
        key: dotted path of an existing key, e.g. `"optimizer.learning_rate"`.
        text: the value as typed on the command line.

    Raises:
        ConfigError: the key does not exist, or the value does not parse to its type.
    """
    node, leaf = _existing_leaf(config, key)
    node[leaf] = _parse_value(key, text, node[leaf])


def with_overrides(config: ml_collections.ConfigDict, overrides: Mapping[str, Any]) -> ml_collections.ConfigDict:
    """A locked copy of `config` with `{"section.key": value}` overrides (Python values).

    The same checks as `apply_override`: each key must exist and not be a section, and each value
    must have the type of the one it replaces (an int for a float key is converted, a list for a
    tuple key becomes a tuple). `config` itself is not changed.

    Args:
        config: the config to start from.
        overrides: dotted key -> new value.

    Returns:
        The changed copy, locked (no new keys can be added by mistake).

    Raises:
        ConfigError: an unknown key, a section key, or a value of the wrong type.
    """
    copy = ml_collections.ConfigDict(config.to_dict())
    for key, value in overrides.items():
        node, leaf = _existing_leaf(copy, key)
        node[leaf] = _checked_value(key, value, node[leaf])
    copy.lock()
    return copy


def load_config(path: str | pathlib.Path, overrides: list[str] = ()) -> ml_collections.ConfigDict:
    """Loads a config file, applies `--config.key=value` overrides and locks it.

    Args:
        path: the config file.
        overrides: strings `--config.key=value` (the `--config.` prefix is optional).

    Returns:
        The resolved, locked config (no new keys can be added by mistake).
    """
    config = load_config_file(path)
    for text in overrides:
        apply_override(config, *parse_override(text))
    config.lock()
    return config
