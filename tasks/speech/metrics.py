"""Detection metrics on scores: ROC, equal error rate (EER) and area under the ROC (AUC).

Scores are "higher = more likely positive" (speech for VAD, bona fide for anti-spoofing).
The EER is read off the ROC where the miss rate equals the false-alarm rate, interpolating
linearly between the two ROC points that bracket the crossing (ties in scores form one
point, so binary decisions give a proper, if coarse, curve).
"""

from __future__ import annotations

import numpy as np


def roc(scores: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(false-positive rate, true-positive rate) at every distinct threshold, from (0, 0) to (1, 1)."""
    scores = np.asarray(scores, np.float64).ravel()
    labels = np.asarray(labels).ravel().astype(bool)
    if labels.all() or not labels.any():
        raise ValueError("ROC needs both positive and negative examples")
    order = np.argsort(-scores, kind="stable")
    s, y = scores[order], labels[order]
    last = np.r_[np.flatnonzero(np.diff(s)), s.size - 1]  # last index of each distinct score
    tps = np.cumsum(y)[last]
    fps = np.cumsum(~y)[last]
    tpr = np.r_[0.0, tps / y.sum()]
    fpr = np.r_[0.0, fps / (~y).sum()]
    return fpr, tpr


def eer(scores: np.ndarray, labels: np.ndarray) -> float:
    """Equal error rate as a fraction in [0, 1]."""
    fpr, tpr = roc(scores, labels)
    fnr = 1.0 - tpr
    diff = fnr - fpr  # goes from 1 (accept nothing) to -1 (accept everything)
    i = int(np.argmax(diff <= 0))
    if i == 0:
        return float(fpr[0])
    t = diff[i - 1] / (diff[i - 1] - diff[i])
    return float(fpr[i - 1] + t * (fpr[i] - fpr[i - 1]))


def auc(scores: np.ndarray, labels: np.ndarray) -> float:
    """Area under the ROC curve (the probability a positive outscores a negative)."""
    fpr, tpr = roc(scores, labels)
    return float(np.sum(np.diff(fpr) * (tpr[1:] + tpr[:-1]) / 2))
