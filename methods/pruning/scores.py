"""Pure scoring functions: how important each feature of a width slot is, and which go.

A slot's feature lives in several tensors (its producer's rows, its consumers' columns,
norm parameters); `methods.dynamic.layout.slot_layout` says where, as `g` contiguous groups
along one dimension (3 gate groups in nn.GRU, `heads` groups in a multi-head projection).
A feature's score sums its entries over every such tensor, so a slot is one dependency
group, as torch-pruning's group importance sums over a group's layers. Scores are divided
by their slot's mean before slots are ranked together (torch-pruning's "mean" normaliser).
"""
from __future__ import annotations

from typing import Mapping, Sequence

import torch

IMPORTANCES = ("magnitude", "taylor")


def feature_sums(values: torch.Tensor, dim: int, groups: int) -> torch.Tensor:
    """Sum `values` per feature along `dim`, laid out as `groups` contiguous groups of features.

    Returns a 1-D tensor of length ``values.shape[dim] // groups``.
    """
    shape = list(values.shape)
    if shape[dim] % groups:
        raise ValueError(f"dimension {dim} of size {shape[dim]} is not {groups} groups")
    n = shape[dim] // groups
    grouped = values.reshape(*shape[:dim], groups, n, *shape[dim + 1 :])
    other = [d for d in range(grouped.dim()) if d != dim + 1]
    return grouped.sum(dim=other) if other else grouped


def slot_scores(entries: Mapping[str, torch.Tensor], layout: Mapping[str, Sequence], slots: Sequence[str]) -> dict[str, torch.Tensor]:
    """Per-feature scores of each slot from element-wise scores `entries` (name → tensor).

    `layout` maps a name to its `SlotDim`s (dim, slot, groups); names absent from `entries`
    (buffers such as running statistics) do not count. Each slot's scores are divided by
    their mean (all-zero slots stay zero).
    """
    out: dict[str, torch.Tensor] = {}
    for name, values in entries.items():
        for d in layout.get(name, []):
            if d.slot in slots:
                s = feature_sums(values.detach().double(), d.dim, d.groups)
                out[d.slot] = s if d.slot not in out else out[d.slot] + s
    return {slot: s / s.mean() if s.mean() > 0 else s for slot, s in out.items()}


def elementwise_scores(params: Mapping[str, torch.Tensor], kind: str, grads: Mapping[str, torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
    """Element scores: ``w**2`` (magnitude, an L2 group norm once summed) or ``|w * dL/dw|`` (taylor)."""
    if kind == "magnitude":
        return {n: p.detach() ** 2 for n, p in params.items()}
    if kind == "taylor":
        if grads is None:
            raise ValueError("taylor importance needs gradients")
        return {n: (p.detach() * grads[n]).abs() for n, p in params.items() if n in grads}
    raise ValueError(f"unknown importance {kind!r}; choose from {', '.join(IMPORTANCES)}")


def removal_order(scores: Mapping[str, torch.Tensor]) -> list[tuple[str, int]]:
    """All (slot, feature) pairs, least important first (ties: slot order, then index)."""
    pairs = [(float(v), i, slot, int(f)) for i, (slot, s) in enumerate(scores.items()) for f, v in enumerate(s)]
    return [(slot, f) for _, _, slot, f in sorted(pairs)]


def keep_after_removing(order: Sequence[tuple[str, int]], sizes: Mapping[str, int], k: int, min_keep: int = 1) -> dict[str, torch.Tensor]:
    """Sorted indices each slot keeps after removing the first `k` removable pairs of `order`.

    A pair is skipped (not removable) when its slot is already down to `min_keep` features,
    so every k gives a valid model and a larger k never keeps more.
    """
    removed: dict[str, set[int]] = {slot: set() for slot in sizes}
    count = 0
    for slot, f in order:
        if count >= k:
            break
        if sizes[slot] - len(removed[slot]) > min_keep:
            removed[slot].add(f)
            count += 1
    return {slot: torch.tensor([i for i in range(n) if i not in removed[slot]], dtype=torch.long) for slot, n in sizes.items()}


def removable(sizes: Mapping[str, int], min_keep: int = 1) -> int:
    """How many features `keep_after_removing` can remove in all."""
    return sum(max(0, n - min_keep) for n in sizes.values())
