"""Reaching a FLOP target: the counter is a monotone function of how much is removed."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass


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
    if not 0 < cfg.pretrain < 1:
        raise ValueError(f"pretrain must be in (0, 1), got {cfg.pretrain}")
    if not 0 <= cfg.step_finetune < 1:
        raise ValueError(f"step_finetune must be in [0, 1), got {cfg.step_finetune}")
    left = 1 - cfg.pretrain - (cfg.steps - 1) * cfg.step_finetune
    if left <= 0:
        raise ValueError(
            f"pretrain + (steps - 1) * step_finetune must stay under 1 (the budget), got {1 - left:.3g}: "
            "nothing would be left for fine-tuning at the target"
        )


@dataclass(frozen=True)
class Budget:
    """How pruning spends the run's budget of `total` optimizer steps: dense pre-training,
    a short fine-tuning after each intermediate prune step, the rest at the target. The
    three add up to `total`, so a pruned candidate has trained exactly as long as the dense
    baseline and every other method's candidates."""

    pretrain: int
    step: int  # after each of the `steps - 1` intermediate prune steps
    final: int
    total: int


def split_budget(cfg, total: int) -> Budget:
    """`cfg.pretrain` and `cfg.step_finetune` are fractions of `total`; at least one step each."""
    pretrain = max(1, round(cfg.pretrain * total))
    step = round(cfg.step_finetune * total) if cfg.step_finetune > 0 else 0
    step = max(1, step) if cfg.step_finetune > 0 else 0
    final = total - pretrain - (cfg.steps - 1) * step
    if final < 1:
        raise ValueError(
            f"a budget of {total} steps cannot hold pre-training ({pretrain}), {cfg.steps - 1} prune steps of "
            f"{step} and fine-tuning; raise train.steps or lower pretrain / step_finetune"
        )
    return Budget(pretrain, step, final, total)


def check_split(cfg, name: str, total: int) -> None:
    """`split_budget` at plan time: a budget too small for the schedule is a `ConfigError`."""
    from bench.config import ConfigError

    try:
        split_budget(cfg, total)
    except ValueError as err:
        raise ConfigError(f"{name}: {err}") from None
