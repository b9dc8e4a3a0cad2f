"""The counter's FLOPs of a task's model at given widths, memoised per process: methods that
search widths (pruning's bisection, a search's floor) probe many of the same widths, and
each count is an fvcore trace."""

from __future__ import annotations

import json

import torch

from bench.complexity import measure
from bench.config import to_dict

_FLOPS_AT: dict[tuple, int] = {}


def flops_at(task, widths: dict[str, int]) -> int:
    """The counter's FLOPs of `task.build_model(widths)` (unnamed slots at full width), memoised."""
    widths = task.resolve_widths(widths)
    key = (json.dumps([task.name, to_dict(task.config)], sort_keys=True), tuple(sorted(widths.items())))
    if key not in _FLOPS_AT:
        if len(_FLOPS_AT) >= 4096:
            _FLOPS_AT.pop(next(iter(_FLOPS_AT)))
        with torch.random.fork_rng(devices=[]):  # memoised: leave the run's generator as if never called
            _FLOPS_AT[key] = measure(task.build_model(widths), task.example_input()).flops
    return _FLOPS_AT[key]
