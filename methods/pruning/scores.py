"""Pure functions that turn torch-pruning's group importances into what a step removes.

A group's importance has one score per channel of its root; `feature_scores` folds the
heads of an attention group onto the slot's features and divides by the mean
(torch-pruning's "mean" normaliser), so groups and slots are ranked together. A slot with
several groups removes the same number from each (one width per slot): its k-th removal
costs the mean over its groups of their k-th smallest score (`slot_costs`). The global
order of removals ranks those costs over all slots; counts follow from how many go.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch


def feature_scores(index_scores: torch.Tensor, heads: int = 1) -> torch.Tensor:
    """Per-feature scores from per-channel ones laid out as `heads` contiguous blocks, divided
    by their mean (all-zero scores stay zero)."""
    n = index_scores.numel()
    if n % heads:
        raise ValueError(f"{n} channels are not {heads} blocks")
    s = index_scores.detach().double().reshape(heads, n // heads).sum(0)
    return s / s.mean() if s.mean() > 0 else s


def slot_costs(scores: Sequence[tuple[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """Slot → cost of its 1st, 2nd, ... removal: the mean over its groups of their sorted scores.

    `scores` holds one (slot, per-feature scores) pair per group; groups of one slot have
    the same width. Costs never decrease along a slot, so ranking them removes in order.
    """
    by_slot: dict[str, list[torch.Tensor]] = {}
    for slot, s in scores:
        by_slot.setdefault(slot, []).append(torch.sort(s).values)
    widths = {slot: {len(s) for s in ss} for slot, ss in by_slot.items()}
    uneven = [slot for slot, w in widths.items() if len(w) > 1]
    if uneven:
        raise ValueError(f"groups of slot {uneven[0]} differ in width: {sorted(widths[uneven[0]])}")
    return {slot: torch.stack(ss).mean(0) for slot, ss in by_slot.items()}


def removal_order(costs: Mapping[str, torch.Tensor]) -> list[tuple[str, int]]:
    """All (slot, i) pairs, cheapest first (ties: slot order, then i)."""
    pairs = [(float(v), n, slot, i) for n, (slot, c) in enumerate(costs.items()) for i, v in enumerate(c)]
    return [(slot, i) for _, _, slot, i in sorted(pairs)]


def removal_counts(
    order: Sequence[tuple[str, int]], sizes: Mapping[str, int], k: int, min_keep: int = 1
) -> dict[str, int]:
    """How many features each slot loses when the first `k` removable pairs of `order` go.

    A pair is skipped when its slot is down to `min_keep` features, so every k gives a
    valid model and a larger k never removes less.
    """
    counts = {slot: 0 for slot in sizes}
    done = 0
    for slot, _ in order:
        if done >= k:
            break
        if sizes[slot] - counts[slot] > min_keep:
            counts[slot] += 1
            done += 1
    return counts


def removable(sizes: Mapping[str, int], min_keep: int = 1) -> int:
    """How many features `removal_counts` can remove in all."""
    return sum(max(0, n - min_keep) for n in sizes.values())


def lowest(scores: torch.Tensor, count: int) -> list[int]:
    """Sorted indices of the `count` lowest scores (ties: lower index first)."""
    order = sorted(range(len(scores)), key=lambda i: (float(scores[i]), i))
    return sorted(order[:count])
