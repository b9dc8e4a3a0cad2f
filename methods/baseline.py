"""The dense baseline: the task's model trained at fixed widths (full width by default).

With `check_convergence` the dense model is also trained for twice the budget: the report
compares the two to say whether the recipe converged. That row (`info["convergence_check"]`)
is a check of the recipe, not a candidate, and no table or figure counts it.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

from bench.registry import register_method
from methods.base import Candidate, Method, RunContext
from methods.pruning.pretrain import dense_model


@dataclass(frozen=True)
class BaselineConfig:
    widths: dict[str, int] = field(default_factory=dict)  # slot=width to fix; missing slots at full width
    # Also train the dense model for twice the budget, so the report can tell whether the
    # recipe converged (error at S within 10 % of the error at 2S); that row is a check, never a candidate.
    check_convergence: bool = True


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
            yield Candidate(
                model=model,
                widths=widths,
                label="dense",
                train_seconds=report["seconds"],
                train_steps=ctx.recipe.steps,
                info={"dense": True, "final_train_loss": report["final_loss"], "loss_curve": report["loss_curve"]},
            )
            if self.config.check_convergence:
                twice = 2 * ctx.recipe.steps
                model, report = dense_model(ctx, twice)
                yield Candidate(
                    model=model,
                    widths=widths,
                    label=f"dense {twice} steps",
                    train_seconds=report["seconds"],
                    train_steps=twice,
                    info={
                        "convergence_check": True,
                        "final_train_loss": report["final_loss"],
                        "loss_curve": report["loss_curve"],
                    },
                )
            return
        label = ",".join(f"{k}={v}" for k, v in widths.items())
        yield Candidate(model=ctx.task.build_model(widths), widths=widths, label=label, needs_training=True)
