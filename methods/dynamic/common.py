"""The lifecycle shared by methods that learn widths during training.

prepare (full model, masks bound) → train with the method's hooks (extra loss = FLOP
cost) → consolidate (a plain model at the learned widths). Subclasses supply a controller:
the `TrainingHooks` that owns the width parameters and transforms each slot's features.
"""
from __future__ import annotations

import time
from typing import Any, Iterator

import torch
from torch import nn

from bench.training import TrainingHooks
from methods.base import Candidate, Method, RunContext
from methods.dynamic.flops_model import FlopsModel
from methods.dynamic.layout import consolidate, mask_weights, slot_layout, unmask_weights
from tasks.base import width_masks


class WidthController(TrainingHooks):
    """Training hooks that learn which features of each slot to keep."""

    def __init__(self, task, slots: list[str], flops: FlopsModel, config: Any):
        self.task, self.slots, self.flops, self.config = task, slots, flops, config
        self.full = task.width_slots()
        self.trajectory: dict[str, list[list[float]]] = {s: [] for s in slots}
        self.record_every = 1

    # Subclasses implement these four.
    def width_parameters(self) -> list[nn.Parameter]:
        """The trainable parameters that set the widths."""
        raise NotImplementedError

    def transform(self, x: torch.Tensor, mask) -> torch.Tensor:
        """What a slot's `WidthMask` does to its features (training and evaluation)."""
        raise NotImplementedError

    def present(self, slot: str, training: bool) -> torch.Tensor | None:
        """Bool mask of the features that exist now (None: all)."""
        raise NotImplementedError

    def soft_widths(self) -> dict[str, torch.Tensor]:
        """Current continuous widths (differentiable): input to the FLOP cost."""
        raise NotImplementedError

    # Shared behaviour.
    def bind(self, model: nn.Module) -> None:
        masks = width_masks(model)
        for slot in self.slots:
            for mask in masks[slot]:
                mask.transform = self.transform
        self.model = model
        mask_weights(model, slot_layout(self.task, self.slots), lambda slot: self.present(slot, model.training))

    def parameters(self, model: nn.Module) -> list[dict[str, Any]]:
        return [{"params": list(model.parameters())}, {"params": self.width_parameters(), "lr": self.config.width_lr, "weight_decay": 0.0}]

    def extra_loss(self, model: nn.Module, step: int) -> torch.Tensor:
        return self.config.cost_weight * self.cost()

    def cost(self) -> torch.Tensor:
        ratio = self.flops.ratio(self.soft_widths())
        budget = getattr(self.config, "budget", None)
        return ratio if budget is None else torch.relu(ratio - budget)

    def after_step(self, model: nn.Module, step: int) -> None:
        if step % self.record_every == 0:
            for slot, width in self.soft_widths().items():
                self.trajectory[slot].append([step, round(float(width.detach()), 3)])

    def summary(self) -> dict[str, Any]:
        """Anything else about the training the candidate's info should record (JSON-able)."""
        return {}

    def keep(self) -> dict[str, torch.Tensor]:
        """Indices of the features each slot keeps at evaluation (at least one)."""
        keep = {}
        for s in self.slots:
            present = self.present(s, training=False)
            keep[s] = torch.arange(self.full[s]) if present is None else torch.nonzero(present).flatten()
        return keep


class DynamicWidthMethod(Method):
    """Base of `noise_injection` and `stochastic_gates`; subclasses set `controller_class`."""

    controller_class: type[WidthController]

    def candidates(self, ctx: RunContext) -> Iterator[Candidate]:
        task = ctx.task
        slots = self.resolve_slots(task)
        flops = FlopsModel.for_task(task, slots)
        for knob in getattr(self.config, self.knob):
            controller = self.make_controller(task, slots, flops, knob)
            model = task.build_model()
            controller.bind(model)
            controller.record_every = max(1, ctx.recipe.steps // 100)
            report = ctx.train(model, hooks=controller, desc=f"{task.name}/{self.name} {self.knob}={knob}")
            model.eval()
            keep = controller.keep()
            unmask_weights(model)
            small, widths = consolidate(task, model, keep)
            yield Candidate(
                model=small,
                widths=widths,
                label=f"{self.knob}={knob}",
                train_seconds=report.seconds,
                info={
                    "width_trajectory": controller.trajectory,
                    "final_soft_widths": {s: float(w.detach()) for s, w in controller.soft_widths().items()},
                    "predicted_flops": float(flops({s: len(keep[s]) for s in slots})),
                    "final_train_loss": report.final_loss,
                    "loss_curve": report.loss_curve,
                    **controller.summary(),
                },
            )

    def make_controller(self, task, slots: list[str], flops: FlopsModel, knob: float) -> WidthController:
        raise NotImplementedError
