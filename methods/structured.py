"""Structured pruning: remove whole features of the task's width slots until the counter
reaches a target FLOP ratio, then fine-tune; the candidate is the task's model at the
smaller widths, so it is saved and reloaded like any other.

Why the slots and not torch-pruning's dependency graph: on the VAD models torch-pruning
1.6 fails (CRNN: IndexError in its GRU handling; transformer: it shrinks BatchNorm weights
but not the mel filterbank buffer feeding them, "running_mean should contain 80 elements").
A width slot *is* a dependency group: `slot_layout` finds every tensor dimension that
holds the slot's features, including the GRU's 3 gate groups, the `heads` groups of the
q/k/v and output projections and the mel filterbank rows, so removing feature i of a slot
removes it everywhere at once and keeps the order of the rest. Importance follows
torch-pruning's group importances (`methods.pruning.scores`); the last layer (the head's
outputs) is never a slot and is never pruned.

Per run: train the dense model (search cost), then `steps` times: score the features,
remove the globally least important (slot-normalised scores) until the counter gives the
step's FLOP ratio (geometric schedule to the target; bisection over how many go), and
fine-tune briefly (search cost); at the end fine-tune with the full recipe (train time).
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from itertools import cycle, islice
from typing import Iterator

import torch
from torch.utils.data import DataLoader

from bench.complexity import measure
from bench.registry import register_method
from methods.base import Candidate, Method, RunContext
from methods.dynamic.layout import consolidate, slot_layout
from methods.pruning.pretrain import pretrained_dense
from methods.pruning.scores import IMPORTANCES, elementwise_scores, keep_after_removing, removable, removal_order, slot_scores
from methods.pruning.stepping import closest_count, step_targets


@dataclass(frozen=True)
class StructuredConfig:
    ratios: list[float] = field(default_factory=lambda: [0.5, 0.25, 0.125, 0.0625])  # target FLOP ratio of the dense model; one run per value
    importance: str = "magnitude"  # magnitude (L2 of each feature's weights) | taylor (|w * dL/dw| over taylor_batches)
    steps: int = 4  # prune steps on the way to the target
    step_finetune: float = 0.1  # fine-tuning between steps, as a fraction of the recipe's steps
    taylor_batches: int = 4  # training batches whose gradients the taylor importance sums
    slots: list[str] = field(default_factory=list)  # slots to prune; empty = all of the task's slots

    def validate(self) -> None:
        bad = [r for r in self.ratios if not 0 < r <= 1]
        if bad or not self.ratios:
            raise ValueError(f"ratios must be in (0, 1], got {bad[0] if bad else 'none'}")
        if self.importance not in IMPORTANCES:
            raise ValueError(f"unknown importance {self.importance!r}; choose from {', '.join(IMPORTANCES)}")
        if self.steps < 1:
            raise ValueError(f"steps must be >= 1, got {self.steps}")
        if not 0 <= self.step_finetune <= 1:
            raise ValueError(f"step_finetune must be in [0, 1], got {self.step_finetune}")
        if self.taylor_batches < 1:
            raise ValueError(f"taylor_batches must be >= 1, got {self.taylor_batches}")


@register_method("structured")
class Structured(Method):
    description = "structured pruning of whole slot features (magnitude or Taylor importance) to a FLOP ratio, then fine-tuning"
    Config = StructuredConfig
    knob = "ratios"

    def resolve_slots(self, task) -> list[str]:
        full = task.width_slots()
        return [s for s in super().resolve_slots(task) if full[s] > 1]  # a width-1 slot cannot shrink

    def candidates(self, ctx: RunContext) -> Iterator[Candidate]:
        task, cfg = ctx.task, self.config
        slots = self.resolve_slots(task)
        layout = slot_layout(task, slots)
        example = task.example_input()
        memo: dict[tuple, int] = {}

        def flops_at(widths: dict[str, int]) -> int:
            key = tuple(sorted(widths.items()))
            if key not in memo:
                memo[key] = measure(task.build_model(widths), example).flops
            return memo[key]

        dense = flops_at(task.width_slots())
        short = replace(ctx.recipe, steps=max(1, round(cfg.step_finetune * ctx.recipe.steps)))
        for target in cfg.ratios:
            model, search_seconds = pretrained_dense(ctx)
            widths, trace = task.resolve_widths(None), []
            for i, step_target in enumerate(step_targets(target, cfg.steps)):
                scores = slot_scores(self.element_scores(ctx, model), layout, slots)
                order = removal_order(scores)
                sizes = {s: widths[s] for s in slots}

                def ratio_of(k: int) -> float:
                    return flops_at({**widths, **{s: len(v) for s, v in keep_after_removing(order, sizes, k).items()}}) / dense

                k = closest_count(ratio_of, step_target, 0, removable(sizes))
                keep = keep_after_removing(order, sizes, k)
                model, widths = consolidate(task, model, keep)
                trace.append({"step_target": round(step_target, 5), "ratio": round(flops_at(widths) / dense, 5), "widths": dict(widths)})
                if i < cfg.steps - 1 and cfg.step_finetune > 0:
                    search_seconds += ctx.train(model, recipe=short, desc=f"{task.name}/structured step {i + 1}").seconds
            report = ctx.train(model, desc=f"{task.name}/structured ratio={target} fine-tune")
            ratio = flops_at(widths) / dense
            yield Candidate(
                model=model.eval(), widths=dict(widths), label=f"ratio={target}", train_seconds=report.seconds, search_seconds=search_seconds,
                info={"target_ratio": target, "achieved_ratio": ratio, "within_10pct": abs(ratio / target - 1) <= 0.1,
                      "dense_flops": dense, "importance": cfg.importance, "steps": trace,
                      "final_train_loss": report.final_loss, "loss_curve": report.loss_curve},
            )

    def element_scores(self, ctx: RunContext, model: torch.nn.Module) -> dict[str, torch.Tensor]:
        """Element-wise importance of every parameter of `model` (taylor: gradients summed over a few batches)."""
        params = dict(model.named_parameters())
        if self.config.importance == "magnitude":
            return elementwise_scores(params, "magnitude")
        loader = DataLoader(ctx.task.dataset("train"), batch_size=ctx.recipe.batch_size, shuffle=True, drop_last=True,
                            generator=torch.Generator().manual_seed(ctx.seed))
        model.train()
        model.zero_grad(set_to_none=True)
        for batch in islice(cycle(loader), self.config.taylor_batches):
            ctx.task.loss(model, batch).backward()
        grads = {n: p.grad.detach().clone() for n, p in params.items() if p.grad is not None}
        model.zero_grad(set_to_none=True)
        model.eval()
        return elementwise_scores(params, "taylor", grads)
