"""Configs: dataclasses with defaults, overridden from the command line, hashed for run keys.

Every task and method has a `Config` dataclass (one comment per field). `--set key=value`
overrides a field; the value is parsed by the field's type, so a typo or a wrong type is a
one-line error before anything runs. The fully resolved config is stored with each result.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


class ConfigError(ValueError):
    """A bad setting: unknown key or a value of the wrong type. The message is one line."""


SCALES = ("smoke", "small", "full")


@dataclass(frozen=True)
class TrainRecipe:
    """How a model is trained; the task gives one per scale so every method gets the same."""

    steps: int = 500  # optimisation steps (mini-batches), not epochs: comparable across data sizes
    batch_size: int = 64  # examples per step
    lr: float = 1e-3  # peak learning rate (cosine decay to 0 over `steps`)
    weight_decay: float = 0.0  # AdamW weight decay
    grad_clip: float = 5.0  # max gradient norm; 0 disables clipping

    def validate(self) -> None:
        if self.steps < 1:
            raise ValueError(f"steps must be >= 1, got {self.steps}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise ValueError(f"lr must be a finite number > 0, got {self.lr}")
        for name in ("weight_decay", "grad_clip"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0):
                raise ValueError(f"{name} must be a finite number >= 0, got {value}")


def parse_set(items: list[str] | None) -> list[tuple[str, str, str]]:
    """Split ``scope.key=value`` strings into ``(scope, key, value)``.

    `scope` is ``task``, ``method`` or ``train`` (or a task or method name, to aim at one
    of several); the caller decides which scopes exist.
    """
    out = []
    for item in items or []:
        if "=" not in item:
            raise ConfigError(f"--set {item!r}: expected scope.key=value, e.g. task.teacher_width=24")
        lhs, value = item.split("=", 1)
        if "." not in lhs:
            raise ConfigError(f"--set {item!r}: the key needs a scope, e.g. task.{lhs} or method.{lhs}")
        scope, key = lhs.split(".", 1)
        out.append((scope.strip(), key.strip(), value.strip()))
    return out


def field_names(config_cls: type) -> list[str]:
    return [f.name for f in dataclasses.fields(config_cls)]


def apply_overrides(config: Any, overrides: Mapping[str, str], where: str) -> Any:
    """Return a copy of dataclass `config` with string `overrides` parsed by field type.

    `where` names the config in error messages (e.g. ``task synthetic``).
    """
    if not overrides:
        return config
    hints = typing.get_type_hints(type(config))
    known = field_names(type(config))
    changes = {}
    for key, raw in overrides.items():
        if key not in known:
            raise ConfigError(f"unknown setting {key!r} for {where}; valid: {', '.join(known) or '(none)'}")
        try:
            changes[key] = parse_value(raw, hints[key])
        except (ValueError, TypeError) as err:
            raise ConfigError(
                f"bad value {raw!r} for {key} of {where}: expected {_type_name(hints[key])} ({err})"
            ) from None
    new = dataclasses.replace(config, **changes)
    validate = getattr(new, "validate", None)
    if callable(validate):
        try:
            validate()
        except ValueError as err:
            raise ConfigError(f"{where}: {err}") from None
    return new


def parse_value(raw: str, tp: Any) -> Any:
    """Parse a command-line string into type `tp` (int, float, bool, str, Optional, list, tuple, dict)."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if raw.lower() in ("none", "null", "") and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return parse_value(raw, inner[0])
    if origin in (list, tuple):
        items = _json_or(raw, lambda s: [x for x in s.split(",") if x.strip()])
        if not isinstance(items, list):
            items = [items]
        elem = args[0] if args else str
        parsed = [parse_value(str(x) if not isinstance(x, str) else x, elem) for x in items]
        return parsed if origin is list else tuple(parsed)
    if origin is dict:
        mapping = _json_or(raw, _parse_pairs)
        if not isinstance(mapping, dict):
            raise ValueError("expected name=value pairs")
        kt, vt = args or (str, str)
        return {parse_value(str(k), kt): parse_value(str(v), vt) for k, v in mapping.items()}
    if tp is bool:
        low = raw.lower()
        if low in ("1", "true", "yes", "on"):
            return True
        if low in ("0", "false", "no", "off"):
            return False
        raise ValueError("not a boolean")
    if tp is int:
        value = float(raw)
        if value != int(value):
            raise ValueError("not an integer")
        return int(value)
    if tp is float:
        return float(raw)
    if tp is str:
        return raw
    raise TypeError(f"unsupported config type {tp}")


def _parse_pairs(raw: str) -> dict[str, str]:
    out = {}
    for part in raw.split(","):
        if not part.strip():
            continue
        sep = "=" if "=" in part else ":"
        if sep not in part:
            raise ValueError(f"{part!r} is not name=value")
        k, v = part.split(sep, 1)
        out[k.strip()] = v.strip()
    return out


def _json_or(raw: str, fallback):
    if raw[:1] in "[{":
        return json.loads(raw)
    return fallback(raw)


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is list:
        return "a comma-separated list"
    if origin is dict:
        return "name=value pairs separated by commas"
    return getattr(tp, "__name__", str(tp))


def to_dict(config: Any) -> dict:
    """A JSON-serialisable dict of a dataclass config."""
    return json.loads(json.dumps(dataclasses.asdict(config), default=str))


def config_hash(payload: Mapping[str, Any]) -> str:
    """Stable short hash of a JSON-serialisable config (key order does not matter)."""
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]
