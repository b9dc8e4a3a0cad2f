"""Reaching a FLOP target: the counter is a monotone function of how much is removed."""
from __future__ import annotations

from typing import Callable


def closest_count(ratio_of: Callable[[int], float], target: float, lo: int, hi: int) -> int:
    """The count k in [lo, hi] whose `ratio_of(k)` is nearest `target` (relatively).

    `ratio_of` must not increase with k (remove more, count fewer FLOPs). Bisection finds
    the smallest k at or below the target, then its neighbour above is compared; if even
    `hi` stays above, `hi` is returned (the target is out of reach). Calls are memoised.
    """
    if lo > hi:
        raise ValueError(f"empty range [{lo}, {hi}]")
    memo: dict[int, float] = {}

    def f(k: int) -> float:
        if k not in memo:
            memo[k] = ratio_of(k)
        return memo[k]

    if f(hi) > target:
        return hi
    a, b = lo, hi  # invariant: f(b) <= target
    while a < b:
        mid = (a + b) // 2
        if f(mid) <= target:
            b = mid
        else:
            a = mid + 1
    if b > lo and abs(f(b - 1) / target - 1) < abs(f(b) / target - 1):
        return b - 1
    return b


def step_targets(target: float, steps: int, start: float = 1.0) -> list[float]:
    """Geometric schedule from `start` down to `target` in `steps` steps (last = target)."""
    return [start * (target / start) ** (i / steps) for i in range(1, steps + 1)]


def validate_schedule(cfg) -> None:
    """The settings magnitude and structured pruning share: target ratios and the prune /
    fine-tune schedule; raises ValueError naming the bad one."""
    bad = [r for r in cfg.ratios if not 0 < r <= 1]
    if bad or not cfg.ratios:
        raise ValueError(f"ratios must be in (0, 1], got {bad[0] if bad else 'none'}")
    if cfg.steps < 1:
        raise ValueError(f"steps must be >= 1, got {cfg.steps}")
    if not 0 <= cfg.step_finetune <= 1:
        raise ValueError(f"step_finetune must be in [0, 1], got {cfg.step_finetune}")
    if not 0 < cfg.finetune <= 1:
        raise ValueError(f"finetune must be in (0, 1], got {cfg.finetune}")
