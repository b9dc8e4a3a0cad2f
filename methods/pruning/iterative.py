"""Iterative pruning to a FLOP target: the schedule the pruning methods share.

Per run, within the budget every method gets (`train.steps` optimizer steps in all; see
`methods.pruning.stepping.split_budget`): train the dense model for `pretrain` of the
budget (search cost; `methods.pruning.pretrain`), then `steps` times: prune to the step's
FLOP ratio (a geometric schedule to the target, `step_targets`), fine-tune briefly
(`step_finetune` of the budget, search cost, not after the last step); at the end
fine-tune with the rest of the budget (train time). One run handles one target ratio
(the knob `ratios`; the runner makes one run per value).

A subclass says only how it prunes and what it hands back:

- `prepare(ctx, model)`: once, on the pre-trained model; returns the model and the run's
  state (whatever the other hooks need: the dense FLOPs, the pruned weights, ...);
- `prune_step(ctx, model, step_target, state)`: remove what brings the model to
  `step_target` (typically by bisection with `closest_count`); returns the model and the
  step's entry of `info["steps"]`;
- `finish(ctx, model, state)`: after the final fine-tuning; returns the candidate's
  model, widths and the method's own `info` fields.

The base records the rest: `train_steps` (the whole budget), `search_seconds`,
`target_ratio`, and `info`'s `budget_split`, `steps`, `final_train_loss` and `loss_curve`.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from typing import Any

from torch import nn

from bench.complexity import COUNTER_DEVICE
from bench.targets import DEFAULT_TARGETS
from methods.base import Candidate, Method, RunContext
from methods.pruning.pretrain import pretrained_dense
from methods.pruning.stepping import check_split, split_budget, step_targets, validate_schedule


@dataclass(frozen=True)
class IterativeConfig:
    # target FLOP ratio of the dense model; one run per value (defaults under the method's floor are left out)
    ratios: list[float] = field(default_factory=lambda: list(DEFAULT_TARGETS))
    steps: int = 3  # prune + fine-tune iterations on the way to the target
    pretrain: float = 0.5  # dense pre-training, as a fraction of the run's budget (train.steps)
    step_finetune: float = 0.1  # fine-tuning after each intermediate step, as a fraction of the budget

    def validate(self) -> None:
        validate_schedule(self)


class IterativePruning(Method):
    """Base of the methods that prune a pre-trained dense model in steps to a FLOP ratio."""

    Config = IterativeConfig
    knob = "ratios"
    target_field = "ratios"
    target_flops = "flops"  # the row column the target is met in (`Candidate.target_flops`)

    def check_budget(self, recipe) -> None:
        check_split(self.config, self.name, recipe.steps)

    def prepare(self, ctx: RunContext, model: nn.Module) -> tuple[nn.Module, Any]:
        """The pre-trained dense model, ready to prune, and the run's state for the other hooks."""
        return model, None

    def prune_step(self, ctx: RunContext, model: nn.Module, step_target: float, state: Any) -> tuple[nn.Module, dict]:
        """Prune `model` to `step_target` of the dense FLOPs: the model and the step's trace entry."""
        raise NotImplementedError

    def finish(self, ctx: RunContext, model: nn.Module, state: Any) -> tuple[nn.Module, dict[str, int], dict]:
        """After the final fine-tuning: the candidate's model, its widths and the method's info fields."""
        raise NotImplementedError

    def candidates(self, ctx: RunContext) -> Iterator[Candidate]:
        task, cfg = ctx.task, self.config
        budget = split_budget(cfg, ctx.recipe.steps)
        short, final = replace(ctx.recipe, steps=budget.step), replace(ctx.recipe, steps=budget.final)
        target = self.knob_value(ctx)
        model, search_seconds = pretrained_dense(ctx, budget.pretrain)
        # The hooks count and trace the model with the complexity counter, on its device;
        # training moves the model to the run's device (`--device`), so it comes back here.
        model, state = self.prepare(ctx, model.to(COUNTER_DEVICE))
        trace = []
        for i, step_target in enumerate(step_targets(target, cfg.steps)):
            model, entry = self.prune_step(ctx, model.to(COUNTER_DEVICE), step_target, state)
            trace.append(entry)
            if i < cfg.steps - 1 and budget.step > 0:
                search_seconds += ctx.train(model, recipe=short, desc=f"{task.name}/{self.name} step {i + 1}").seconds
        report = ctx.train(model, recipe=final, desc=f"{task.name}/{self.name} ratio={target} fine-tune")
        model, widths, info = self.finish(ctx, model.to(COUNTER_DEVICE), state)
        yield Candidate(
            model=model.eval(),
            widths=widths,
            label=f"ratio={target}",
            train_seconds=report.seconds,
            search_seconds=search_seconds,
            train_steps=budget.total,
            target_ratio=target,
            target_flops=self.target_flops,
            info={
                **info,
                "budget_split": vars(budget),
                "steps": trace,
                "final_train_loss": report.final_loss,
                "loss_curve": report.loss_curve,
            },
        )
