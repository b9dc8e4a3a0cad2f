"""Structured pruning with torch-pruning: remove whole channels / units / mel bands / head
features, dependency-aware, until the counter reaches a target FLOP ratio, then fine-tune.

torch-pruning's `DependencyGraph` finds what must shrink together and does the surgery;
custom pruners (`methods.pruning.tp_pruners`) handle what it cannot: the GRU (its hidden
units in every gate block) and the log-mel front end (the filterbank buffer, so the mel
bands after it shrink with it). Attention keeps its head count: a head_dim feature goes
from every head of q, k, v and the output projection's inputs. Importance is torch-pruning's
group magnitude (default) or group Taylor (`importance=taylor`), plus the recurrent weights.

Why not `tp.pruner.MetaPruner`: it removes a channel ratio per step and measures nothing,
and it would prune the groups of one width slot (each ResNet block's inner channels) to
different widths that `task.build_model(widths)` cannot rebuild. Here each step maps
torch-pruning's groups to the task's slots (`methods.pruning.slot_groups`), removes the
same number from every group of a slot, and picks how many go by bisection against
`bench.complexity.measure` (the harness's counter) on the model at those widths. After
the surgery the pruned weights are loaded into `task.build_model(widths)`, so candidates
are the task's ordinary smaller models, saved and reloaded from their widths. Layers
whose outputs are no slot (the classifier's logits) are torch-pruning ignored layers.

The schedule (dense pre-training, `steps` prune steps with short fine-tunes, the final
fine-tuning) is `methods.pruning.iterative`'s. Each step builds the graph, scores the
groups (`group_scores`, which subclasses may replace) and removes the globally cheapest
features until the counter gives the step's FLOP ratio.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from itertools import cycle, islice

import torch
from torch.utils.data import DataLoader

from bench.complexity import flops_at
from bench.registry import register_method
from methods.base import RunContext
from methods.dynamic.layout import SlotDim, slot_layout
from methods.pruning.iterative import IterativeConfig, IterativePruning
from methods.pruning.scores import feature_scores, lowest, removable, removal_counts, removal_order, slot_costs
from methods.pruning.slot_groups import SlotGroup, as_task_model, prune_features, slot_groups
from methods.pruning.stepping import closest_count
from methods.pruning.tp_pruners import IMPORTANCES, dependency_graph


@dataclass(frozen=True)
class StructuredConfig(IterativeConfig):
    importance: str = (
        "magnitude"  # magnitude (group L2 of each feature's weights) | taylor (|w * dL/dw| over taylor_batches)
    )
    taylor_batches: int = 4  # training batches whose gradients the taylor importance sums
    slots: list[str] = field(default_factory=list)  # slots to prune; empty = all of the task's slots

    def validate(self) -> None:
        super().validate()
        if self.importance not in IMPORTANCES:
            raise ValueError(f"unknown importance {self.importance!r}; choose from {', '.join(IMPORTANCES)}")
        if self.taylor_batches < 1:
            raise ValueError(f"taylor_batches must be >= 1, got {self.taylor_batches}")


@dataclass
class _Run:
    slots: list[str]  # the slots pruned
    layout: dict[str, list[SlotDim]]  # every slot, so all widths can be read back
    example: torch.Tensor
    dense: int  # the dense model's FLOPs
    widths: dict[str, int]  # the model's widths now
    grouped: dict[str, int] = field(default_factory=dict)  # slot -> torch-pruning groups at the last step


@register_method("structured")
class Structured(IterativePruning):
    description = (
        "torch-pruning structured pruning (channels, GRU units, mel bands, head features) to a FLOP ratio, "
        "then fine-tuning"
    )
    Config = StructuredConfig

    @property
    def importance(self) -> str:
        """The importance's name, recorded in `info`."""
        return self.config.importance

    def resolve_slots(self, task) -> list[str]:
        full = task.width_slots()
        return [s for s in super().resolve_slots(task) if full[s] > 1]  # a width-1 slot cannot shrink

    def floor(self, task) -> float:
        """FLOP ratio with every pruned slot at width 1 (the front end, e.g., stays)."""
        return flops_at(task, {s: 1 for s in self.resolve_slots(task)}) / flops_at(task, {})

    def prepare(self, ctx: RunContext, model: torch.nn.Module) -> tuple[torch.nn.Module, _Run]:
        task = ctx.task
        run = _Run(
            self.resolve_slots(task),
            slot_layout(task),
            task.example_input(),
            flops_at(task, {}, ctx.shared),
            task.resolve_widths(),
        )
        return model, run

    def prune_step(
        self, ctx: RunContext, model: torch.nn.Module, step_target: float, run: _Run
    ) -> tuple[torch.nn.Module, dict]:
        task, widths = ctx.task, run.widths
        graph = dependency_graph(model, run.example)
        groups = slot_groups(graph, model, run.layout, widths, run.slots)
        run.grouped = {s: sum(g.slot == s for g in groups) for s in run.slots}
        scores = self.group_scores(ctx, model, groups)
        order = removal_order(slot_costs([(g.slot, s) for g, s in zip(groups, scores)]))
        sizes = {s: widths[s] for s in run.slots if run.grouped[s]}

        def ratio_of(k: int) -> float:
            removed = removal_counts(order, sizes, k)
            return flops_at(task, {**widths, **{s: sizes[s] - c for s, c in removed.items()}}, ctx.shared) / run.dense

        counts = removal_counts(order, sizes, closest_count(ratio_of, step_target, 0, removable(sizes)))
        for g, s in zip(groups, scores):
            prune_features(graph, g, lowest(s, counts[g.slot]))
        model, run.widths = as_task_model(task, model, run.layout)
        entry = {
            "step_target": round(step_target, 5),
            "ratio": round(flops_at(task, run.widths, ctx.shared) / run.dense, 5),
            "widths": dict(run.widths),
        }
        return model, entry

    def finish(
        self, ctx: RunContext, model: torch.nn.Module, run: _Run
    ) -> tuple[torch.nn.Module, dict[str, int], dict]:
        info = {
            # the counter on the task's model at these widths: the pruned model's shapes
            "achieved_ratio": flops_at(ctx.task, run.widths, ctx.shared) / run.dense,
            "dense_flops": run.dense,
            "importance": self.importance,
            "tp_groups": run.grouped,
        }
        return model, dict(run.widths), info

    def group_scores(self, ctx: RunContext, model: torch.nn.Module, groups: list[SlotGroup]) -> list[torch.Tensor]:
        """Per-feature importance of each group (taylor: gradients summed over a few batches)."""
        importance = IMPORTANCES[self.config.importance]()
        model.zero_grad(set_to_none=True)
        if self.config.importance == "taylor":
            loader = DataLoader(
                ctx.task.dataset("train"),
                batch_size=ctx.recipe.batch_size,
                shuffle=True,
                drop_last=True,
                generator=torch.Generator().manual_seed(ctx.seed),
            )
            model.train()
            for batch in islice(cycle(loader), self.config.taylor_batches):
                ctx.task.loss(model, batch).backward()
            model.eval()
        scores = [feature_scores(importance(g.group), g.heads) for g in groups]
        model.zero_grad(set_to_none=True)
        return scores
