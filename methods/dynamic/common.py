"""The lifecycle shared by methods that learn widths during training.

prepare (full model, masks bound) → train with the method's hooks (extra loss = FLOP
cost) → consolidate (a plain model at the learned widths). Subclasses supply a controller:
the `TrainingHooks` that owns the width parameters and transforms each slot's features.
"""
from __future__ import annotations

from typing import Any, Iterator

import torch
from torch import nn

from bench.checkpoint import load_candidate
from bench.config import config_hash
from bench.store import ResultStore
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
        # Whether the knob's bound (kappa_min, the gates' budget) ever acted in training. If
        # not, a run with a lower bound trains exactly this model (see `DynamicWidthMethod`).
        # None: the controller does not track it.
        self.bound_reached: bool | None = None

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

    def keep(self) -> dict[str, torch.Tensor]:
        """Indices of the features each slot keeps at evaluation (at least one)."""
        keep = {}
        for s in self.slots:
            present = self.present(s, training=False)
            keep[s] = torch.arange(self.full[s]) if present is None else torch.nonzero(present).flatten()
        return keep


class DynamicWidthMethod(Method):
    """Base of `noise_injection` and `stochastic_gates`; subclasses supply `make_controller`.

    Their knob is a bound that only acts once reached (kappa's floor; the budget below which
    the FLOP cost is flat). A run whose bound never acted trains exactly what any lower
    bound would (training is seeded), so a run with a lower bound reuses such a finished
    run's model from the store, re-evaluated and re-measured, instead of training again. On
    the speech tasks' small recipes the widths stop above kappa_min 0.25 and the gates' FLOP
    ratio above budget 0.25, so the 0.125 runs cost an evaluation.
    """

    reuses_higher_knob = True

    def candidates(self, ctx: RunContext) -> Iterator[Candidate]:
        twin = self.unbound_twin(ctx)
        if twin is not None:
            model, _ = load_candidate(ctx.models_dir / twin["model_path"])
            yield Candidate(model=model, widths=twin["widths"], label=f"{self.knob}={getattr(self.config, self.knob)[0]}",
                            train_seconds=twin["train_seconds"],  # the training it stands for
                            search_seconds=twin["search_seconds"] - twin["train_seconds"],
                            info={**twin["info"], "same_as": twin["run_key"]})
            return
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
                train_steps=report.steps,
                info={
                    "width_trajectory": controller.trajectory,
                    "final_soft_widths": {s: float(w.detach()) for s, w in controller.soft_widths().items()},
                    "predicted_flops": float(flops({s: len(keep[s]) for s in slots})),
                    "final_train_loss": report.final_loss,
                    "loss_curve": report.loss_curve,
                    "bound_reached": controller.bound_reached,
                },
            )

    def make_controller(self, task, slots: list[str], flops: FlopsModel, knob: float) -> WidthController:
        raise NotImplementedError

    def unbound_twin(self, ctx: RunContext) -> dict[str, Any] | None:
        """A finished run in the store with this run's task, seed and settings but a higher
        knob value whose bound never acted (the lowest such), or None."""
        values = getattr(self.config, self.knob)
        if len(values) != 1 or not (ctx.store_url and ctx.models_dir and ctx.config):
            return None

        def without_knob(config: dict[str, Any]) -> str:
            config = {k: v for k, v in config.items() if k != "seed"}
            return config_hash({**config, "method": {**config["method"], self.knob: None}})

        key = without_knob(ctx.config)
        found = [r for r in ResultStore(ctx.store_url, ctx.models_dir).rows(task=ctx.config["task"]["name"], method=self.name)
                 if r["status"] == "ok" and r["seed"] == ctx.seed and r["method_config"][self.knob][0] > values[0]
                 and (r["info"] or {}).get("bound_reached") is False and without_knob(r["config"]) == key
                 and (ctx.models_dir / r["model_path"]).is_file()]
        return min(found, key=lambda r: r["method_config"][self.knob][0], default=None)
