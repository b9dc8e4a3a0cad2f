"""The lifecycle shared by methods that learn widths during training (docs/method.md).

prepare (full model, masks bound) → train with the method's hooks (extra loss = FLOP
cost) → consolidate (a plain model at the learned widths). Subclasses supply a controller:
the `TrainingHooks` that owns the width parameters and transforms each slot's features.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch
from torch import nn

from bench.complexity import flops_at
from bench.config import ConfigError
from bench.device import model_device
from bench.hooks import TrainingHooks
from methods.base import Candidate, Method, RunContext
from methods.dynamic.flops_model import FlopsModel
from methods.dynamic.layout import consolidate, mask_weights, slot_layout, unmask_weights
from methods.dynamic.live_weights import slice_weights, sliceable_slots
from methods.dynamic.presets import preset_slots
from tasks.base import width_masks

# Share of the recipe in which Adam, moving a width parameter by about its learning rate
# per step, can cross the parameter's whole range: the rate is `span / (CROSS_SHARE * steps)`.
CROSS_SHARE = 0.25
# Adam's betas for the width parameters: short memories, so a width turns back within a few
# steps of crossing its target (with (0.9, 0.999) it overshot 0.5 down to 0.3 and stayed).
WIDTH_BETAS = (0.5, 0.9)


class WidthController(TrainingHooks):
    """Training hooks that learn which features of each slot to keep.

    `target`: the FLOP/s target as a fraction of the dense model's; the cost is then
    `cost_weight * |ratio - target|`. None: the plain cost `cost_weight * ratio`.
    `steps`: the recipe's length, which sets the width parameters' learning rate.
    """

    span = 1.0  # range a width parameter has to be able to cross (kappa: 0..1)
    # Whether `live_count` says which leading features a pass computes, so that the slots'
    # weights can be narrowed to them (methods/dynamic/live_weights.py).
    slices_weights = False

    def __init__(
        self, task, slots: list[str], flops: FlopsModel, config: Any, target: float | None = None, steps: int = 120
    ):
        self.task, self.slots, self.flops, self.config = task, slots, flops, config
        self.target, self.steps = target, steps
        self.full = task.width_slots()
        self.trajectory: dict[str, list[list[float]]] = {s: [] for s in slots}
        self.record_every = 1
        self.sliced: list[str] = []  # slots computed at their live width only (`bind`)

    # Subclasses implement these five.
    def width_parameters(self) -> list[nn.Parameter]:
        """The trainable parameters that set the widths."""
        raise NotImplementedError

    def width_modules(self) -> list[nn.Module]:
        """The modules (e.g. an `nn.ParameterDict`) that hold `width_parameters()`, so that
        `to` moves them the way `nn.Module.to` moves a model's."""
        raise NotImplementedError

    def transform(self, x: torch.Tensor, mask) -> torch.Tensor:
        """What a slot's `WidthMask` does to its features (training and evaluation)."""
        raise NotImplementedError

    # Optional: `transform` of `relu(x)` in fewer passes, for masks that apply a ReLU (None:
    # the mask applies the ReLU, then `transform`).
    relu_transform = None

    def present(self, slot: str, training: bool) -> torch.Tensor | None:
        """Bool mask of the features that exist now (None: all)."""
        raise NotImplementedError

    def soft_widths(self) -> dict[str, torch.Tensor]:
        """Current continuous widths (differentiable): input to the FLOP cost."""
        raise NotImplementedError

    def live_count(self, slot: str, training: bool) -> int | None:
        """How many leading features of `slot` a pass computes (None: all); only asked
        where `slices_weights` is set."""
        return None

    # Shared behaviour.
    @property
    def device(self) -> torch.device:
        """Where the width parameters are (the model's device once training has started)."""
        return self.width_parameters()[0].device

    def to(self, device: torch.device | str) -> WidthController:
        """Move the width parameters to `device`, in place. Do it before moving a bound model
        there: moving a recurrent layer evaluates its masked weights, and so the masks."""
        for module in self.width_modules():
            module.to(device)
        return self

    def bind(self, model: nn.Module) -> None:
        masks = width_masks(model)
        for slot in self.slots:
            for mask in masks[slot]:
                mask.transform, mask.relu_transform = self.transform, self.relu_transform
        self.model = model
        layout = slot_layout(self.task, self.slots)
        mask_weights(model, layout, lambda slot: self.present(slot, model.training))
        if self.slices_weights:
            self.sliced = sliceable_slots(self.task, layout, self.slots)
            slice_weights(model, layout, self.sliced, lambda slot: self.live_count(slot, model.training))

    @property
    def width_lr(self) -> float:
        """`config.width_lr`, or by default a rate at which the width parameters can cross
        their range in `CROSS_SHARE` of the recipe, whatever its length."""
        return self.config.width_lr or self.span / (CROSS_SHARE * self.steps)

    def parameters(self, model: nn.Module) -> list[dict[str, Any]]:
        # The training loop asks once it has moved the model to the run's device: the width
        # parameters follow it there (a no-op after `candidates`, which moved them first).
        self.to(model_device(model))
        # Own group: no weight decay (it would pull widths to 0); the rate held for the first
        # half of the recipe (the weights' cosine decay froze the widths long before the cost
        # was balanced), then decayed, so the widths settle on the balance they found.
        return [
            {"params": list(model.parameters())},
            {
                "params": self.width_parameters(),
                "lr": self.width_lr,
                "weight_decay": 0.0,
                "schedule": "hold_cosine",
                "betas": WIDTH_BETAS,
            },
        ]

    def extra_loss(self, model: nn.Module, step: int) -> torch.Tensor:
        return self.cost_weight * self.cost()

    @property
    def cost_weight(self) -> float:
        return self.config.cost_weight

    def cost(self) -> torch.Tensor:
        ratio = self.flops.ratio(self.soft_widths())
        # Two-sided: under a one-sided hinge the widths random-walked below the target once
        # they had reached it (VAD CRNN, target 0.5: 0.42 at the end), since nothing pulled them back.
        return ratio if self.target is None else (ratio - self.target).abs()

    def after_step(self, model: nn.Module, step: int) -> None:
        if step % self.record_every == 0:
            for slot, width in self.soft_widths().items():
                self.trajectory[slot].append([step, round(float(width.detach()), 3)])

    def keep(self) -> dict[str, torch.Tensor]:
        """Indices of the features each slot keeps at evaluation (at least one)."""
        keep = {}
        for s in self.slots:
            present = self.present(s, training=False)
            everything = present is None
            keep[s] = torch.arange(self.full[s], device=self.device) if everything else torch.nonzero(present).flatten()
        return keep

    def summary(self) -> dict[str, Any]:
        """What the candidate's info records about the end of training (subclasses add)."""
        return {}


class DynamicWidthMethod(Method):
    """Base of `noise_injection` and `stochastic_gates`; subclasses supply `make_controller`.

    The knob is `target`: one run per FLOP/s target (a fraction of the dense model's), each
    reached through the cost `cost_weight * |ratio - target|`. Default targets under
    the floor (every dynamic slot at one feature) are left out with a note.
    """

    knob = "target"
    target_field = "target"

    def resolve_slots(self, task) -> list[str]:
        """The dynamic slots: the preset's, else `config.slots`, else all of the task's."""
        if self.config.preset:
            if self.config.slots:
                raise ConfigError(f"{self.name}: set either preset or slots, not both")
            return preset_slots(task, self.config.preset, self.name).slots
        return super().resolve_slots(task)

    def ties(self, task) -> list[list[str]]:
        """Groups of slots that share one width parameter (only presets tie slots)."""
        return preset_slots(task, self.config.preset, self.name).ties if self.config.preset else []

    def floor(self, task) -> float:
        """FLOP ratio with one feature per dynamic slot: no target below it can be met."""
        slots = self.resolve_slots(task)
        return flops_at(task, {s: 1 for s in slots}) / flops_at(task, {})

    def validate(self, task) -> None:
        self.resolve_slots(task)
        if self.knob != "target" or self.config.target == type(self.config)().target:
            return  # default targets this task cannot meet are left out in knob_values
        floor = self.floor(task)
        for target in self.config.target:
            if target < floor:
                raise ConfigError(
                    f"{self.name}: target {target} cannot be met on task {task.name}: with one feature "
                    f"per dynamic slot the model still costs {floor:.3f} of the dense FLOP/s"
                )

    def label(self, knob: float) -> str:
        preset = f"preset={self.config.preset} " if self.config.preset else ""
        return f"{preset}{self.knob}={knob}"

    def candidates(self, ctx: RunContext) -> Iterator[Candidate]:
        task = ctx.task
        slots = self.resolve_slots(task)
        flops = FlopsModel.for_task(task, slots, ctx.shared)
        knob = self.knob_value(ctx)
        controller = self.make_controller(task, slots, flops, knob, ctx.recipe.steps)
        model = task.build_model()
        self.prepare_model(model)
        controller.bind(model)
        # Before the training loop moves the model: moving a GRU/LSTM evaluates its masked
        # weights (`mask_weights`), whose masks come from the width parameters' device.
        controller.to(ctx.device)
        controller.record_every = max(1, ctx.recipe.steps // 100)
        report = ctx.train(model, hooks=controller, desc=f"{task.name}/{self.name} {self.label(knob)}")
        model.eval()
        keep = controller.keep()
        unmask_weights(model)
        small, widths = consolidate(task, model, keep)
        yield Candidate(
            model=small,
            widths=widths,
            label=self.label(knob),
            train_seconds=report.seconds,
            train_steps=ctx.recipe.steps,
            target_ratio=knob if self.knob == "target" else None,
            info={
                "width_trajectory": controller.trajectory,
                "final_soft_widths": {s: float(w.detach()) for s, w in controller.soft_widths().items()},
                "predicted_flops": float(flops({s: len(keep[s]) for s in slots})),
                "predicted_ratio": float(flops.ratio({s: len(keep[s]) for s in slots})),
                "width_lr": controller.width_lr,
                "live_weight_slots": controller.sliced,
                "final_train_loss": report.final_loss,
                "loss_curve": report.loss_curve,
                **controller.summary(),
            },
        )

    def make_controller(self, task, slots: list[str], flops: FlopsModel, knob: float, steps: int) -> WidthController:
        raise NotImplementedError

    def prepare_model(self, model: nn.Module) -> None:
        """Change the full model before training (default: nothing)."""
