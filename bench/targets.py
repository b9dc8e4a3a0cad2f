"""FLOP/s targets: the one list of operating points every shrinking method is asked for.

A target is a fraction of the dense model's FLOP/s. Methods whose config holds such a list
name its field in `Method.target_field`; `--targets` sets that field for all of them at once
(a method's own `--set` still wins), so every method is compared at the same points. A
candidate meets its target when its FLOP/s ratio is within `TOLERANCE` of it.
"""

from __future__ import annotations

from bench.config import ConfigError

DEFAULT_TARGETS = (0.5, 0.25, 0.125)
TOLERANCE = 0.1  # relative: a candidate at 0.27 meets 0.25, one at 0.11 does not


def check_targets(targets: list[float]) -> list[float]:
    """The targets, or a one-line `ConfigError` naming the first impossible one."""
    if not targets:
        raise ConfigError("--targets needs at least one FLOP/s ratio, e.g. --targets 0.5 0.25 0.125")
    for t in targets:
        if not 0 < t <= 1:
            raise ConfigError(
                f"FLOP/s target {t:g} is not a fraction of the dense model's FLOP/s; give values in (0, 1], "
                "e.g. --targets 0.5 0.25 0.125"
            )
    return list(dict.fromkeys(float(t) for t in targets))


def met(achieved: float, target: float | None) -> bool | None:
    """Whether `achieved` (a FLOP/s ratio) is within `TOLERANCE` of `target`; None without a target."""
    return None if target is None else abs(achieved / target - 1) <= TOLERANCE


def check_reachable(targets: list[float], floors: dict[str, float | None], where: str) -> None:
    """Raise a one-line `ConfigError` if a target is under every method's floor (the lowest
    FLOP/s ratio it can reach on the task `where`); a method without a known floor reaches all."""
    if not floors:
        return
    for t in targets:
        if all(f is not None and t < f * (1 - TOLERANCE) for f in floors.values()):
            lowest = min(f for f in floors.values() if f is not None)
            raise ConfigError(
                f"FLOP/s target {t:g} is under every method's floor on {where} (lowest: {lowest:.3f} of the dense "
                f"FLOP/s, which no method can go under); give targets of at least {lowest:.3f}"
            )
