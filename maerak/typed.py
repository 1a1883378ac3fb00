"""Config files as typed objects: a YAML mapping checked against a frozen dataclass, once, where
it is read. The dataclass is the schema: its fields are the keys a file may hold, their types
what each may be, their defaults the one place a default is stated (a field without one is
required). An unknown key, a missing one, a wrong type or a value outside a `Literal` is a
ConfigError of one line naming the file and the key: `sources.yml: dedup.max_distance: ...`.

Standard library only (no pydantic): profiles.py reads profiles.yml through this on every verb.
"""
from __future__ import annotations

import dataclasses
import types
import typing
from typing import Any, Literal, TypeVar, Union

from maerak.errors import ConfigError

T = TypeVar("T")


def _name(value: Any) -> str:
    return {dict: "a mapping", list: "a list", str: "text", bool: "a boolean", type(None): "null (nothing)"}.get(
        type(value), f"{type(value).__name__} {value!r}")


def _key(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix else name


def parse(cls: type[T], data: Any, file: object, key: str = "") -> T:
    """`data` (a YAML mapping) as a `cls` instance; `file` and `key` name it in messages."""
    if not isinstance(data, dict):
        raise ConfigError(f"{file}: {key or '(top level)'}: expected a mapping, got {_name(data)}")
    fields = {f.name: f for f in dataclasses.fields(cls)  # type: ignore[arg-type]
              if f.init and f.metadata.get("in_file", True)}  # not a key of the file (e.g. the path it came from)
    unknown = [k for k in data if k not in fields]
    if unknown:
        raise ConfigError(f"{file}: {_key(key, str(unknown[0]))}: unknown key (expected one of: {', '.join(fields)})")
    hints = typing.get_type_hints(cls)
    values = {}
    for name, f in fields.items():
        if name in data:
            values[name] = convert(hints[name], data[name], file, _key(key, name))
            _check_bounds(f, values[name], file, _key(key, name))
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise ConfigError(f"{file}: {_key(key, name)}: missing (required)")
    try:
        return cls(**values)
    except (ValueError, TypeError) as exc:  # a __post_init__ check across fields
        raise ConfigError(f"{file}: {key or '(top level)'}: {exc}") from None


def number(default: Any, *, least: float | None = None, above: float | None = None) -> Any:
    """A numeric field with a bound, checked where the file is read: `batch_size: int = number(4, least=1)`
    refuses 0 and -4 in one line instead of a crash (or a silent default) later."""
    return dataclasses.field(default=default, metadata={"least": least, "above": above})


def _check_bounds(f: dataclasses.Field, value: Any, file: object, key: str) -> None:
    least, above = f.metadata.get("least"), f.metadata.get("above")
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return  # None where the field allows it
    if least is not None and value < least:
        raise ConfigError(f"{file}: {key}: {value!r}: expected {least!r} or more")
    if above is not None and value <= above:
        raise ConfigError(f"{file}: {key}: {value!r}: expected more than {above!r}")


def convert(tp: Any, value: Any, file: object, key: str) -> Any:
    """One value checked against a field type: a dataclass, Literal, X | None, tuple[X, ...],
    dict[str, X], bool, int, float, str or Any (lists come back as tuples: the objects are frozen)."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if tp is Any:
        return value
    if dataclasses.is_dataclass(tp):
        return parse(tp, value, file, key)
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        rest = [a for a in args if a is not type(None)]
        if len(rest) != 1:
            raise TypeError(f"{key}: only `X | None` unions are supported")
        return convert(rest[0], value, file, key)
    if origin is Literal:
        if value not in args or type(value) not in {type(a) for a in args}:
            raise ConfigError(f"{file}: {key}: {value!r}: expected one of {', '.join(map(repr, args))}")
        return value
    if origin is tuple:
        if not isinstance(value, list):
            raise ConfigError(f"{file}: {key}: expected a list, got {_name(value)}")
        return tuple(convert(args[0], v, file, f"{key}[{_label(v, i)}]") for i, v in enumerate(value))
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{file}: {key}: expected a mapping, got {_name(value)}")
        return {str(k): convert(args[1], v, file, _key(key, str(k))) for k, v in value.items()}
    ok = {bool: isinstance(value, bool), int: isinstance(value, int) and not isinstance(value, bool),
          float: isinstance(value, (int, float)) and not isinstance(value, bool), str: isinstance(value, str)}
    if tp not in ok:
        raise TypeError(f"{key}: unsupported field type {tp!r}")
    if not ok[tp]:
        want = {bool: "true or false", int: "an integer", float: "a number", str: "text"}[tp]
        raise ConfigError(f"{file}: {key}: expected {want}, got {_name(value)}")
    return float(value) if tp is float else value


def positive_int(text: str) -> int:
    """An argparse type for counts and sizes (--batch-size, --max-length): 0 or a negative number
    is refused, not silently replaced by a default."""
    import argparse

    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected a positive integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value}: expected a positive integer (1 or more)")
    return value


def _label(value: Any, index: int) -> str:
    """A list entry by its `name` when it has one (sources[magpie]), else by its index."""
    return str(value["name"]) if isinstance(value, dict) and isinstance(value.get("name"), str) else str(index)


def plain(obj: Any) -> Any:
    """A parsed object back as plain data (tuples as lists), e.g. for a hash or a report."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: plain(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (list, tuple)):
        return [plain(v) for v in obj]
    if isinstance(obj, dict):
        return {k: plain(v) for k, v in obj.items()}
    return obj
