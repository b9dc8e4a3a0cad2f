"""Pure aggregation functions on hand-made points, against values worked out by hand."""

import math

import numpy as np
import pytest

from reports import aggregate as agg


def test_pareto_front_keeps_non_dominated_points_cheapest_first():
    flops = [100, 1000, 2000, 5000, 5000, 0, float("nan")]
    error = [0.5, 0.2, 0.3, 0.104, 0.2, 0.01, 0.01]  # (2000, .3) and (5000, .2) are dominated; 0 / NaN FLOPs ignored
    assert agg.pareto_front(flops, error).tolist() == [0, 1, 3]
    assert agg.pareto_front([10, 10, 10], [0.3, 0.3, 0.1]).tolist() == [2]  # same FLOPs: the better one only
    assert agg.pareto_front([], []).tolist() == []


def test_normalise_maps_decades_of_reduction_and_chance_level_error_to_the_unit_square():
    u, v = agg.normalise([10000, 1000, 100, 1, 20000], [0.0, 0.5, 1.0, 2.0, 0.1], dense_flops=10000, ref_error=1.0)
    assert u.tolist() == pytest.approx(
        [0.0, 0.5, 1.0, 1.0, 0.0]
    )  # 100x fewer is the end; heavier than dense clips to 0
    assert v.tolist() == pytest.approx([1.0, 0.5, 0.0, 0.0, 0.9])


def test_hypervolume_is_the_union_of_boxes():
    # Boxes [0,1]x[0,.5], [0,.5]x[0,.8]: area .5*.8 + .5*.5 = .65; a dominated point adds nothing.
    assert agg.hypervolume_2d([1.0, 0.5], [0.5, 0.8]) == pytest.approx(0.65)
    assert agg.hypervolume_2d([1.0, 0.5, 0.4], [0.5, 0.8, 0.7]) == pytest.approx(0.65)
    assert agg.hypervolume_2d([], []) == 0.0
    # In FLOPs: dense 10000, points 100 (u=1) and 1000 (u=.5), NMSE .5 and .2 (v=.5, .8).
    assert agg.hypervolume([100, 1000], [0.5, 0.2], 10000, 1.0) == pytest.approx(0.65)
    assert agg.hypervolume([10000], [0.1], 10000, 1.0) == 0.0  # the dense model alone buys no reduction
    assert math.isnan(agg.hypervolume([0.0], [5.0], 10000, 50.0))  # FLOPs not counted: no hypervolume


def test_iso_quality_reduction_takes_the_cheapest_candidate_within_tolerance():
    flops, error = [10000, 5000, 2500, 1000], [5.0, 5.3, 5.6, 5.45]
    assert agg.iso_quality_reduction(flops, error, 10000, 5.0, 0.5) == pytest.approx(10.0)  # 1000 at 5.45 <= 5.5
    assert agg.iso_quality_reduction(flops, error, 10000, 5.0, 0.2) == pytest.approx(1.0)
    assert math.isnan(agg.iso_quality_reduction([5000], [7.0], 10000, 5.0, 0.5))
    assert agg.iso_tolerance(0.5, 5.0) == 0.5 and agg.iso_tolerance(0.005, 0.01) == 0.005  # as the task declares
    assert agg.iso_tolerance(None, 2.0) == pytest.approx(0.1)  # none declared: 5 % of the dense error


def test_reference_error_is_the_declared_chance_level_and_flagged_otherwise():
    assert agg.reference_error(50.0) == (50.0, True)
    assert agg.reference_error(1.0) == (1.0, True)
    assert agg.reference_error(None, [1.0, 3.0]) == (6.0, False)


def test_mean_ci_uses_student_t():
    ci = agg.mean_ci([2.0, 4.0])  # s = sqrt(2), half = t(.975, 1) * s / sqrt(2) = 12.706
    assert (ci.mean, ci.n) == (3.0, 2) and ci.hi - ci.mean == pytest.approx(12.706)
    ci3 = agg.mean_ci([1.0, 2.0, 3.0, float("nan")])  # NaN ignored; s = 1, half = 4.303 / sqrt(3)
    assert ci3.n == 3 and ci3.hi - 2.0 == pytest.approx(4.303 / math.sqrt(3))
    assert agg.mean_ci([5.0]).format() == "5" and math.isnan(agg.mean_ci([5.0]).lo)
    assert agg.mean_ci([]).format() == "-"
    assert agg.mean_ci([2.0, 4.0]).format("{:.1f}") == "3.0 ± 12.7"


def test_median_front_and_band_across_seeds():
    fronts = [([100, 1000], [0.5, 0.2]), ([200, 1000], [0.4, 0.1]), ([100, 2000], [0.6, 0.3])]
    grid, med, lo, hi = agg.median_front(fronts, points=5)
    assert grid[0] == 200 and grid[-1] == 2000  # from where every seed has a point
    assert {100.0, 1000.0} - set(grid) == {100.0}  # candidates' own FLOPs are on the grid (100 is below the start)
    at = {g: (m, a, b) for g, m, a, b in zip(grid, med, lo, hi)}
    assert at[200] == pytest.approx((0.5, 0.4, 0.6))
    assert at[1000] == pytest.approx((0.2, 0.1, 0.6))
    assert at[2000] == pytest.approx((0.2, 0.1, 0.3))
    assert agg.attainment([100, 1000], [0.5, 0.2], [50, 100, 999, 1000]).tolist()[1:] == [0.5, 0.5, 0.2]
    assert np.isnan(agg.attainment([100], [0.5], [50])[0])
