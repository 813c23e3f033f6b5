"""Strict mapping of YAML/dict configs onto (nested, frozen) dataclasses.

Unknown keys are errors that name the key and its section; values are checked against the
field's annotation (bool, int, float, str, tuples/lists of those, Optional, Literal and
nested dataclasses). Validation of ranges belongs in each dataclass's ``__post_init__``,
which raises ``ValueError`` (never ``assert``).

Two extensions serve sections whose form is chosen by the user:

- a field whose YAML key is not a Python name (``lambda``) declares it as
  ``field(metadata={"key": "lambda"})``;
- an annotation that is a class with a ``from_config_value(value, where)`` classmethod is
  parsed by that method (a section whose dataclass depends on a ``kind`` key, such as the
  descriptor: see :class:`mlpot.descriptors.DescriptorConfig`).
"""

from __future__ import annotations

import dataclasses
import types
from typing import Any, Literal, TypeVar, Union, get_args, get_origin, get_type_hints

__all__ = ["from_dict", "to_dict", "read_yaml_mapping", "apply_overrides", "ConfigError"]

T = TypeVar("T")


class ConfigError(ValueError):
    """A configuration value or key is invalid; the message names the full key path."""


def read_yaml_mapping(path) -> dict[str, Any]:
    """The top-level mapping of a YAML file (``{}`` for an empty file).

    Raises:
        FileNotFoundError: no such file.
        ConfigError: the file is not valid YAML or its top level is not a mapping.
    """
    from pathlib import Path

    import yaml

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no such config file: {path}")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({exc})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level, got {type(data).__name__}")
    return data


def from_dict(cls: type[T], data: dict[str, Any] | None, where: str = "") -> T:
    """Build dataclass ``cls`` from ``data``; missing keys take the dataclass defaults."""
    data = {} if data is None else data
    if not isinstance(data, dict):
        raise ConfigError(f"{where or cls.__name__}: expected a mapping, got {type(data).__name__}")
    fields = {_key(f): f for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        path = ", ".join(_join(where, k) for k in unknown)
        raise ConfigError(f"unknown config key(s): {path}; allowed in '{where or 'top level'}': {sorted(fields)}")
    hints = get_type_hints(cls)
    kwargs = {fields[key].name: _convert(hints[fields[key].name], value, _join(where, key))
              for key, value in data.items()}
    try:
        return cls(**kwargs)
    except TypeError as exc:  # a required field without a default
        raise ConfigError(f"{where or cls.__name__}: {exc}") from None
    except ValueError as exc:  # the dataclass's own check: name where it sits unless it does
        # (a section nested under another, e.g. finish.optimizer, names its keys as at the top)
        message = str(exc)
        if where and not message.startswith(where.split(".")[0].split("[")[0]):
            message = f"{where}: {message}"
        raise ConfigError(message) from None


def to_dict(obj) -> dict[str, Any]:
    """Plain dict (lists for tuples) of a dataclass, suitable for YAML/JSON and from_dict."""
    def plain(v):
        if dataclasses.is_dataclass(v):
            return {_key(f): plain(getattr(v, f.name)) for f in dataclasses.fields(v)}
        if isinstance(v, (list, tuple)):
            return [plain(x) for x in v]
        if isinstance(v, dict):
            return {k: plain(x) for k, x in v.items()}
        return v

    return plain(obj)


def _key(f: dataclasses.Field) -> str:
    """The YAML key of a dataclass field: its name unless ``metadata["key"]`` says otherwise."""
    return f.metadata.get("key", f.name)


def _join(where: str, key: str) -> str:
    return f"{where}.{key}" if where else key


def _convert(tp, value, where: str):
    origin = get_origin(tp)
    if tp is Any:
        return value
    if origin in (Union, types.UnionType):
        args = get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _convert(arg, value, where)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(errors[0] if len(errors) == 1 else f"{where}: {value!r} fits none of {tp}")
    if isinstance(tp, type) and hasattr(tp, "from_config_value"):
        return tp.from_config_value(value, where)
    if origin is Literal:
        if value not in get_args(tp):
            raise ConfigError(f"{where}: {value!r} is not one of {list(get_args(tp))}")
        return value
    if dataclasses.is_dataclass(tp):
        return from_dict(tp, value, where)
    if origin in (tuple, list):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        args = get_args(tp)
        inner = args[0] if args else Any
        items = [_convert(inner, v, f"{where}[{k}]") for k, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        return dict(value)
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true/false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, str):  # PyYAML reads "1e-3" (no dot) as a string
            try:
                return float(value)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a string, got {value!r}")
        return value
    return value


def apply_overrides(data: dict[str, Any], overrides: list[str] | tuple[str, ...], root: type) -> dict[str, Any]:
    """Return a copy of ``data`` with ``key.path=value`` overrides applied.

    Keys are checked against the dataclass ``root`` as they are walked, so a typo is reported
    as such (``training.epoch``) rather than as a later, vaguer error. Free-form mappings
    (``descriptor``, ``data.read_options``) accept any key.

    Raises:
        ConfigError: naming the override and the key for a malformed override, an unknown
            key, or a path through a value that is not a mapping.
    """
    import copy

    import yaml

    data = copy.deepcopy(data)
    for item in overrides:
        key, sep, text = item.partition("=")
        key = key.strip()
        if not sep or not key or any(not part for part in key.split(".")):
            raise ConfigError(f"override {item!r}: expected key.path=value")
        try:
            value = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise ConfigError(f"override {item!r}: value is not valid YAML ({exc})") from None
        parts = key.split(".")
        node, tp = data, root
        for depth, part in enumerate(parts):
            where = ".".join(parts[: depth + 1])
            if tp is not None:
                hints = get_type_hints(tp)
                if part not in hints:
                    raise ConfigError(f"override {item!r}: unknown config key {where!r}; "
                                      f"allowed: {sorted(hints)}")
                tp = _dataclass_of(hints[part])
            if depth == len(parts) - 1:
                node[part] = value
                break
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            if not isinstance(child, dict):
                raise ConfigError(f"override {item!r}: {where} is {child!r}, not a section")
            node = child
    return data


def _dataclass_of(tp) -> type | None:
    """The dataclass inside an annotation (``X`` or ``X | None``), else ``None``."""
    if dataclasses.is_dataclass(tp):
        return tp
    for arg in getattr(tp, "__args__", ()) or ():
        if dataclasses.is_dataclass(arg):
            return arg
    return None
