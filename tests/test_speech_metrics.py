"""EER and AUC on constructed scores whose answers are known."""

import numpy as np
import pytest

from tasks.speech.metrics import auc, eer


def test_eer_is_zero_for_separated_scores_and_one_for_inverted_ones():
    labels = np.r_[np.zeros(5), np.ones(5)]
    scores = np.arange(10.0)
    assert eer(scores, labels) == 0.0
    assert eer(-scores, labels) == 1.0
    assert auc(scores, labels) == 1.0 and auc(-scores, labels) == 0.0


def test_eer_at_an_exact_crossing():
    # negatives 0..9, positives 5.5..14.5: accepting >= 7.5 gives 2/10 false alarms
    # (8, 9) and 2/10 misses (5.5, 6.5): the EER is exactly 20%.
    neg, pos = np.arange(10.0), np.arange(10.0) + 5.5
    scores, labels = np.r_[neg, pos], np.r_[np.zeros(10), np.ones(10)]
    assert eer(scores, labels) == pytest.approx(0.20)
    # AUC = P(pos > neg): pairs with pos - neg > 0 among 100
    assert auc(scores, labels) == pytest.approx(np.mean(pos[:, None] > neg[None, :]))


def test_eer_interpolates_between_operating_points_and_handles_ties():
    # A binary detector with 30% misses and 10% false alarms: its ROC goes (0, 0) ->
    # (0.1, 0.7) -> (1, 1). On the second segment tpr = 0.7 + 0.3 (f - 0.1) / 0.9, and
    # miss rate = false-alarm rate where 0.3 - (f - 0.1) / 3 = f, i.e. f = 0.25.
    labels = np.r_[np.zeros(10), np.ones(10)]
    scores = np.r_[np.ones(1), np.zeros(9), np.ones(7), np.zeros(3)]
    assert eer(scores, labels) == pytest.approx(0.25)


def test_eer_of_gaussian_scores_matches_theory():
    rng = np.random.default_rng(0)
    d = 2.0  # two unit Gaussians d apart: EER = Phi(-d / 2)
    scores = np.r_[rng.standard_normal(20000), d + rng.standard_normal(20000)]
    labels = np.r_[np.zeros(20000), np.ones(20000)]
    assert eer(scores, labels) == pytest.approx(0.158655, abs=0.006)


def test_metrics_need_both_classes():
    with pytest.raises(ValueError, match="both"):
        eer(np.arange(3.0), np.ones(3))
