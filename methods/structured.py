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

Per run, within the budget every method gets (`train.steps` optimizer steps in all; see
`methods.pruning.stepping.split_budget`): train the dense model for `pretrain` of the
budget (search cost), then `steps` times: build the graph, score the groups, remove the
globally cheapest features until the counter gives the step's FLOP ratio (geometric
schedule to the target), fine-tune briefly (`step_finetune` of the budget, search cost);
at the end fine-tune with the rest of the budget (train time).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from itertools import cycle, islice

import torch
from torch.utils.data import DataLoader

from bench.complexity import flops_at
from bench.registry import register_method
from bench.targets import DEFAULT_TARGETS
from methods.base import Candidate, Method, RunContext
from methods.dynamic.layout import slot_layout
from methods.pruning.pretrain import pretrained_dense
from methods.pruning.scores import feature_scores, lowest, removable, removal_counts, removal_order, slot_costs
from methods.pruning.slot_groups import SlotGroup, as_task_model, prune_features, slot_groups
from methods.pruning.stepping import check_split, closest_count, split_budget, step_targets, validate_schedule
from methods.pruning.tp_pruners import IMPORTANCES, dependency_graph


@dataclass(frozen=True)
class StructuredConfig:
    ratios: list[float] = field(
        default_factory=lambda: list(DEFAULT_TARGETS)
    )  # target FLOP ratio of the dense model; one run per value
    importance: str = (
        "magnitude"  # magnitude (group L2 of each feature's weights) | taylor (|w * dL/dw| over taylor_batches)
    )
    steps: int = 3  # prune steps on the way to the target
    pretrain: float = 0.5  # dense pre-training, as a fraction of the run's budget (train.steps)
    step_finetune: float = 0.1  # fine-tuning between steps, as a fraction of the budget
    taylor_batches: int = 4  # training batches whose gradients the taylor importance sums
    slots: list[str] = field(default_factory=list)  # slots to prune; empty = all of the task's slots

    def validate(self) -> None:
        validate_schedule(self)
        if self.importance not in IMPORTANCES:
            raise ValueError(f"unknown importance {self.importance!r}; choose from {', '.join(IMPORTANCES)}")
        if self.taylor_batches < 1:
            raise ValueError(f"taylor_batches must be >= 1, got {self.taylor_batches}")


@register_method("structured")
class Structured(Method):
    description = (
        "torch-pruning structured pruning (channels, GRU units, mel bands, head features) to a FLOP ratio, "
        "then fine-tuning"
    )
    Config = StructuredConfig
    knob = "ratios"
    target_field = "ratios"

    def check_budget(self, recipe) -> None:
        check_split(self.config, self.name, recipe.steps)

    def resolve_slots(self, task) -> list[str]:
        full = task.width_slots()
        return [s for s in super().resolve_slots(task) if full[s] > 1]  # a width-1 slot cannot shrink

    def floor(self, task) -> float:
        """FLOP ratio with every pruned slot at width 1 (the front end, e.g., stays)."""
        return flops_at(task, {s: 1 for s in self.resolve_slots(task)}) / flops_at(task, {})

    def candidates(self, ctx: RunContext) -> Iterator[Candidate]:
        task, cfg = ctx.task, self.config
        slots = self.resolve_slots(task)
        layout = slot_layout(task)  # every slot, so all widths can be read back
        example = task.example_input()
        dense = flops_at(task, {})
        budget = split_budget(cfg, ctx.recipe.steps)
        short, final = replace(ctx.recipe, steps=budget.step), replace(ctx.recipe, steps=budget.final)
        target = self.knob_value(ctx)
        model, search_seconds = pretrained_dense(ctx, budget.pretrain)
        widths, trace, grouped = task.resolve_widths(None), [], {}
        for i, step_target in enumerate(step_targets(target, cfg.steps)):
            graph = dependency_graph(model, example)
            groups = slot_groups(graph, model, layout, widths, slots)
            grouped = {s: sum(g.slot == s for g in groups) for s in slots}
            scores = self.group_scores(ctx, model, groups)
            order = removal_order(slot_costs([(g.slot, s) for g, s in zip(groups, scores)]))
            sizes = {s: widths[s] for s in slots if grouped[s]}

            def ratio_of(k: int) -> float:
                return (
                    flops_at(task, {**widths, **{s: sizes[s] - c for s, c in removal_counts(order, sizes, k).items()}})
                    / dense
                )

            counts = removal_counts(order, sizes, closest_count(ratio_of, step_target, 0, removable(sizes)))
            for g, s in zip(groups, scores):
                prune_features(graph, g, lowest(s, counts[g.slot]))
            model, widths = as_task_model(task, model, layout)
            trace.append(
                {
                    "step_target": round(step_target, 5),
                    "ratio": round(flops_at(task, widths) / dense, 5),
                    "widths": dict(widths),
                }
            )
            if i < cfg.steps - 1 and budget.step > 0:
                search_seconds += ctx.train(model, recipe=short, desc=f"{task.name}/structured step {i + 1}").seconds
        report = ctx.train(model, recipe=final, desc=f"{task.name}/structured ratio={target} fine-tune")
        ratio = (
            flops_at(task, widths) / dense
        )  # the counter on the task's model at these widths: the pruned model's shapes
        yield Candidate(
            model=model.eval(),
            widths=dict(widths),
            label=f"ratio={target}",
            train_seconds=report.seconds,
            search_seconds=search_seconds,
            train_steps=budget.total,
            target_ratio=target,
            info={
                "achieved_ratio": ratio,
                "dense_flops": dense,
                "budget_split": vars(budget),
                "importance": cfg.importance,
                "steps": trace,
                "tp_groups": grouped,
                "final_train_loss": report.final_loss,
                "loss_curve": report.loss_curve,
            },
        )

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
