"""The dense baseline: the task's model trained at fixed widths (full width by default)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterator

from bench.registry import register_method
from methods.base import Candidate, Method, RunContext
from methods.pruning.pretrain import dense_model


@dataclass(frozen=True)
class BaselineConfig:
    widths: dict[str, int] = field(default_factory=dict)  # slot=width to fix; missing slots at full width


@register_method("baseline")
class Baseline(Method):
    description = "train the task's model at fixed widths (full width unless method.widths is set)"
    Config = BaselineConfig

    def validate(self, task) -> None:
        task.resolve_widths(self.config.widths)

    def candidates(self, ctx: RunContext) -> Iterator[Candidate]:
        widths = ctx.task.resolve_widths(self.config.widths)
        if widths == ctx.task.width_slots():  # the dense model, shared with the search's full-width trial
            model, report = dense_model(ctx)
            yield Candidate(model=model, widths=widths, label="dense", train_seconds=report["seconds"], train_steps=ctx.recipe.steps,
                            info={"final_train_loss": report["final_loss"], "loss_curve": report["loss_curve"]})
            return
        label = ",".join(f"{k}={v}" for k, v in widths.items())
        yield Candidate(model=ctx.task.build_model(widths), widths=widths, label=label, needs_training=True)
