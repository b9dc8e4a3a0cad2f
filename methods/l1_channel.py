"""L1-norm channel pruning (Li et al. 2017, "Pruning Filters for Efficient ConvNets") to a FLOP ratio.

The classic criterion: a feature (conv filter, Linear unit, GRU unit, mel band, head
feature) is as important as the L1 norm of its weights, and the least important go.
Here the norm is over the feature's whole torch-pruning group (its filter, the consumers'
input columns, the norm's scale and, for a recurrent layer, every gate's rows and its
recurrent column), via torch-pruning's `GroupMagnitudeImportance(p=1)` with the recurrent
weights added (`methods.pruning.tp_pruners.WithRecurrentWeights`); each group's scores are
divided by their mean, so groups and slots are ranked together.

Everything else is structured pruning's (`methods.structured`): the dependency graph and
custom pruners, one width per slot, the bisection to the counter's FLOP ratio, candidates
rebuilt as the task's model at their widths. The default is one-shot, as in the paper
(`steps=1`: dense pre-training, one prune to the target, fine-tuning with the rest of the
budget); `steps` > 1 prunes iteratively with the schedule of `methods.pruning.iterative`.
An extra, not in `--method all`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch_pruning as tp

from bench.registry import register_method
from methods.base import RunContext
from methods.pruning.iterative import IterativeConfig
from methods.pruning.scores import feature_scores
from methods.pruning.slot_groups import SlotGroup
from methods.pruning.tp_pruners import WithRecurrentWeights
from methods.structured import Structured


@dataclass(frozen=True)
class L1ChannelConfig(IterativeConfig):
    steps: int = 1  # prune steps on the way to the target (1: one-shot)
    slots: list[str] = field(default_factory=list)  # slots to prune; empty = all of the task's slots


class L1Importance(WithRecurrentWeights, tp.importance.GroupMagnitudeImportance):
    """Group L1 norm: ``|w|`` summed over the group's entries of each index."""

    def __init__(self):
        super().__init__(p=1, group_reduction="sum", normalizer=None)

    def entry(self, w: torch.Tensor) -> torch.Tensor:
        return w.detach().abs()


@register_method("l1_channel")
class L1Channel(Structured):
    description = "L1-norm channel pruning (Li et al. 2017), one-shot to a FLOP ratio, then fine-tuning"
    Config = L1ChannelConfig
    in_all = False
    importance = "l1"

    def group_scores(self, ctx: RunContext, model: torch.nn.Module, groups: list[SlotGroup]) -> list[torch.Tensor]:
        """Per-feature L1 norm of each group, divided by the group's mean."""
        importance = L1Importance()
        return [feature_scores(importance(g.group), g.heads) for g in groups]
