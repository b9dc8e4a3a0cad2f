"""Pure functions that turn (FLOP/s, error) points into the figures of the leaderboard.

Nothing here reads the store or knows about methods: inputs are arrays, outputs are
numbers or arrays, so each function is tested on a handful of hand-made points.

**The normalised space** (fixed, so hypervolumes are comparable across runs and stores):

- x, the FLOP/s reduction: ``u = log10(dense_flops / flops) / DECADES``, clipped to [0, 1].
  0 is the dense model, 1 is ``10**DECADES`` (100x) fewer FLOP/s. A log axis because
  reductions multiply (2x then 2x is 4x) and the paper reports 2x .. 10x+ cuts; two decades
  cover every cut it reports. Candidates heavier than the dense model sit at u = 0.
- y, the quality: ``v = 1 - error / reference_error``, clipped to [0, 1], where the
  reference error is the metric's chance level, as the task declares it (stored with each
  row): an EER of 50 % or an NMSE of 1 (predicting the mean). It does not depend on the run's own dense
  model, so a better dense model is not penalised by a moved reference.
- The reference point is (0, 0): the dense model's FLOP/s at chance-level error. The
  **hypervolume** of a front is the area of the union of the boxes [0, u] x [0, v] of its
  points, a number in [0, 1]; larger is better. The dense model alone scores 0 (it buys
  no reduction); a method scores by offering cheaper models that keep quality.

**Iso-quality reduction**: the largest ``dense_flops / flops`` among candidates whose error
is at most the dense error + the task's iso-quality tolerance (stored with each row): +0.5
points for EER in %; +0.005 for NMSE, the same half point on its scale in percent (1 - NMSE
is the share of variance explained, so this is R^2 falling by at most 0.5 points). NaN
where no candidate is within the tolerance (no reduction is claimed).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

DECADES = 2.0  # width of the x range: u = 1 at 10**DECADES fewer FLOP/s than dense
FALLBACK_RELATIVE_TOLERANCE = 0.05  # no declared tolerance: 5 % of the dense error

# Two-sided 95 % Student-t quantiles t_{0.975, df} for df = 1..30; beyond, the normal 1.96
# is within 2 %. A table, not scipy: scipy is not one of the project's dependencies.
_T975 = [
    12.706,
    4.303,
    3.182,
    2.776,
    2.571,
    2.447,
    2.365,
    2.306,
    2.262,
    2.228,
    2.201,
    2.179,
    2.160,
    2.145,
    2.131,
    2.120,
    2.110,
    2.101,
    2.093,
    2.086,
    2.080,
    2.074,
    2.069,
    2.064,
    2.060,
    2.056,
    2.052,
    2.048,
    2.045,
    2.042,
]


def reference_error(chance: float | None, errors: Sequence[float] = ()) -> tuple[float, bool]:
    """The metric's chance-level error, and whether it is fixed (comparable across runs). A
    metric without a declared chance level falls back to twice the worst error seen: not
    comparable."""
    if chance is not None and np.isfinite(chance) and chance > 0:
        return float(chance), True
    finite = [e for e in errors if np.isfinite(e)]
    return (2.0 * max(finite) if finite else 1.0), False


def iso_tolerance(declared: float | None, dense_error: float) -> float:
    """How much worse than the dense error still counts as the same quality."""
    if declared is not None:
        return float(declared)
    return FALLBACK_RELATIVE_TOLERANCE * abs(dense_error)


def pareto_front(flops: Sequence[float], error: Sequence[float]) -> np.ndarray:
    """Indices of the non-dominated points (fewer FLOP/s and lower error are better), in
    order of increasing FLOP/s (so error strictly decreases along them). Of identical
    points one is kept; NaN and non-positive FLOP/s are ignored."""
    f, e = np.asarray(flops, float), np.asarray(error, float)
    valid = np.flatnonzero(np.isfinite(f) & np.isfinite(e) & (f > 0))
    order = valid[np.lexsort((e[valid], f[valid]))]  # by flops, then error
    keep, best = [], math.inf
    for i in order:
        if e[i] < best:  # cheaper points were all worse: this one is not dominated
            keep.append(i)
            best = e[i]
    return np.asarray(keep, dtype=int)


def normalise(
    flops: Sequence[float], error: Sequence[float], dense_flops: float, ref_error: float, decades: float = DECADES
) -> tuple[np.ndarray, np.ndarray]:
    """Map points to the fixed [0, 1]^2 space of the module docstring: (reduction u, quality v)."""
    f, e = np.asarray(flops, float), np.asarray(error, float)
    with np.errstate(divide="ignore", invalid="ignore"):
        u = np.clip(np.log10(dense_flops / f) / decades, 0.0, 1.0)
    v = np.clip(1.0 - e / ref_error, 0.0, 1.0)
    return u, v


def hypervolume_2d(u: Sequence[float], v: Sequence[float]) -> float:
    """Area dominated by points (both coordinates: larger is better) above reference (0, 0)."""
    pts = [(a, b) for a, b in zip(np.asarray(u, float), np.asarray(v, float)) if np.isfinite(a) and np.isfinite(b)]
    pts.sort(key=lambda p: -p[0])  # sweep from the largest reduction down
    area, best_v = 0.0, 0.0
    for i, (a, b) in enumerate(pts):
        best_v = max(best_v, b)  # every point at >= this u dominates this strip up to best_v
        next_a = pts[i + 1][0] if i + 1 < len(pts) else 0.0
        area += (a - next_a) * best_v
    return float(area)


def hypervolume(
    flops: Sequence[float], error: Sequence[float], dense_flops: float, ref_error: float, decades: float = DECADES
) -> float:
    """Hypervolume of the points in the normalised space (dominated points add nothing)."""
    f, e = np.asarray(flops, float), np.asarray(error, float)
    valid = np.isfinite(f) & (f > 0) & np.isfinite(e)  # flops 0 means "not counted", not free
    if not np.isfinite(dense_flops) or dense_flops <= 0 or not valid.any():
        return math.nan
    return hypervolume_2d(*normalise(f[valid], e[valid], dense_flops, ref_error, decades))


def iso_quality_reduction(
    flops: Sequence[float], error: Sequence[float], dense_flops: float, dense_error: float, tolerance: float
) -> float:
    """Largest dense_flops / flops among points with error <= dense_error + tolerance; NaN if none."""
    f, e = np.asarray(flops, float), np.asarray(error, float)
    ok = np.isfinite(f) & (f > 0) & np.isfinite(e) & (e <= dense_error + tolerance + 1e-12)
    if not ok.any() or not np.isfinite(dense_flops):
        return math.nan
    return float(dense_flops / f[ok].min())


@dataclass(frozen=True)
class MeanCI:
    """Mean over seeds with a two-sided 95 % Student-t interval (NaN bounds for n < 2)."""

    mean: float
    lo: float
    hi: float
    n: int

    def format(self, fmt: str = "{:.3g}") -> str:
        if self.n == 0 or not np.isfinite(self.mean):
            return "-"
        if self.n < 2:
            return fmt.format(self.mean)
        return f"{fmt.format(self.mean)} ± {fmt.format((self.hi - self.lo) / 2)}"


def mean_ci(values: Sequence[float]) -> MeanCI:
    """Mean and 95 % t-interval of the finite values (seeds are few, so t, not normal)."""
    x = np.asarray([v for v in values if v is not None and np.isfinite(v)], float)
    n = len(x)
    if n == 0:
        return MeanCI(math.nan, math.nan, math.nan, 0)
    mean = float(x.mean())
    if n < 2:
        return MeanCI(mean, math.nan, math.nan, 1)
    t = _T975[n - 2] if n - 1 <= len(_T975) else 1.96
    half = t * float(x.std(ddof=1)) / math.sqrt(n)
    return MeanCI(mean, mean - half, mean + half, n)


def attainment(flops: Sequence[float], error: Sequence[float], grid: Sequence[float]) -> np.ndarray:
    """The front as a step function: at each grid FLOP/s, the lowest error among points
    that cost no more; NaN below the cheapest point."""
    f, e = np.asarray(flops, float), np.asarray(error, float)
    out = np.full(len(grid), math.nan)
    for j, x in enumerate(grid):
        ok = f <= x * (1 + 1e-12)
        if ok.any():
            out[j] = e[ok].min()
    return out


def median_front(
    fronts: Sequence[tuple[Sequence[float], Sequence[float]]], points: int = 64
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Median and min-max band across seeds of per-seed fronts [(flops, error), ...], on a
    log grid from where every seed has a point to the largest FLOP/s. Returns
    (grid, median, lo, hi); empty arrays when there is nothing to draw."""
    fronts = [(np.asarray(f, float), np.asarray(e, float)) for f, e in fronts if len(f)]
    if not fronts:
        return (np.array([]),) * 4
    start = max(f.min() for f, _ in fronts)  # below this some seed has no candidate
    stop = max(f.max() for f, _ in fronts)
    grid = np.array([start]) if stop <= start else np.geomspace(start, stop, points)
    # The candidates' own FLOP/s join the grid, so a step plot turns exactly at each point.
    own = np.concatenate([f for f, _ in fronts])
    grid = np.unique(np.concatenate([grid, own[(own >= start) & (own <= stop)]]))
    curves = np.vstack([attainment(f, e, grid) for f, e in fronts])
    return grid, np.median(curves, axis=0), curves.min(axis=0), curves.max(axis=0)
