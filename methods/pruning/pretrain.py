"""The dense model both pruning methods start from, trained once per (task, recipe, seed).

Runs of one method and seed differ only in the knob (the target), so the dense model is
the same for all of them; it is kept in memory for the process, and its training time is
charged to every run that uses it (search cost), as if each had trained it.
"""
from __future__ import annotations

import json

import torch
from torch import nn

from bench.config import to_dict

_CACHE: dict[str, tuple[dict, float]] = {}
_CACHE_SIZE = 4


def pretrained_dense(ctx) -> tuple[nn.Module, float]:
    """A dense model of `ctx.task` trained with `ctx.recipe` and `ctx.seed`, and the seconds it took."""
    task = ctx.task
    key = json.dumps([task.name, to_dict(task.config), task.scale, str(task.data_root), to_dict(ctx.recipe), ctx.seed], sort_keys=True)
    torch.manual_seed(ctx.seed)
    model = task.build_model()
    if key in _CACHE:
        state, seconds = _CACHE[key]
        model.load_state_dict(state)
        return model.eval(), seconds
    report = ctx.train(model, desc=f"{task.name} dense pre-training")
    if len(_CACHE) >= _CACHE_SIZE:
        _CACHE.pop(next(iter(_CACHE)))
    _CACHE[key] = ({k: v.detach().clone() for k, v in model.state_dict().items()}, report.seconds)
    return model.eval(), report.seconds
