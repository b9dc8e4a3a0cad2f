"""Dynamic complexity layers (Gómez & Bäckström 2026): widths learned by feature noise injection.

Each dynamic slot of `N` features gets a trainable `kappa` in [kappa_min, 1] and a
continuous width `K = kappa * N`, `k = floor(K)`, `lam = K - k`. In training its features
become: 1..k unchanged; feature k+1 = sqrt(lam) * x + sqrt(1 - lam) * sigma * noise (the
variance-preserving mix, continuous in K, so the task loss has a gradient in kappa); the rest
zero. The FLOP cost (`FlopsModel`, fitted to the benchmark's counter) of the continuous
widths joins the loss. At evaluation there is no noise and the first round(K) features are
kept, which is exactly what consolidation keeps, so the consolidated plain model computes
the same outputs.

Choices not fixed by the paper (see shared/METHOD.md), and why:
- `sigma` is the boundary feature's standard deviation over the batch (detached): noise at
  the feature's own scale, whatever the layer's normalisation.
- `lam` is clamped to [1e-3, 1 - 1e-3] inside the square roots: d sqrt(lam)/d lam is
  1/(2 sqrt(lam)), unbounded at 0 and 1; the clamp keeps every kappa gradient finite.
- `kappa` is a plain parameter (own learning rate `width_lr`), clamped to [kappa_min, 1]
  after each step: the bound is hard, as in the paper, where widths end on it.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from torch import nn

from bench.config import ConfigError
from bench.registry import register_method
from methods.dynamic.common import DynamicWidthMethod, WidthController

_LAM_EPS = 1e-3


@dataclass(frozen=True)
class NoiseInjectionConfig:
    # lower bound of kappa; one run per value. Not 0.0625 by default: in the small recipes the
    # widths stop above 0.125 on every task, so that run repeated the 0.125 one exactly.
    kappa_min: list[float] = field(default_factory=lambda: [0.5, 0.25, 0.125])
    cost_weight: float = 2.0  # weight of the FLOP cost (FLOPs / dense FLOPs) in the loss
    budget: float | None = None  # if set, the cost is relu(FLOP ratio - budget): only excess is penalised
    slots: list[str] = field(default_factory=list)  # dynamic slots; empty = all of the task's slots
    width_lr: float = 0.01  # learning rate of the kappas
    kappa_init: float = 1.0  # starting kappa (1 = full width)

    def validate(self) -> None:
        bad = [k for k in self.kappa_min if not 0 < k <= 1]
        if bad:
            raise ValueError(f"kappa_min must be in (0, 1], got {bad[0]}")
        if self.cost_weight < 0:
            raise ValueError(f"cost_weight must be >= 0, got {self.cost_weight}")
        if self.budget is not None and not 0 < self.budget <= 1:
            raise ValueError(f"budget must be in (0, 1], got {self.budget}")
        if not 0 < self.kappa_init <= 1:
            raise ValueError(f"kappa_init must be in (0, 1], got {self.kappa_init}")


class NoiseInjectionController(WidthController):
    def __init__(self, task, slots, flops, config, kappa_min: float):
        super().__init__(task, slots, flops, config)
        self.kappa_min = kappa_min
        start = max(kappa_min, config.kappa_init)
        self.bound_reached = config.kappa_init < kappa_min  # the bound acts on the start, or on a clamp below
        self.kappa = nn.ParameterDict({s: nn.Parameter(torch.tensor(start)) for s in slots})

    def width_parameters(self) -> list[nn.Parameter]:
        return list(self.kappa.values())

    def soft_widths(self) -> dict[str, torch.Tensor]:
        return {s: self.kappa[s] * self.full[s] for s in self.slots}

    def eval_width(self, slot: str) -> int:
        return max(1, min(self.full[slot], round(float(self.kappa[slot].detach()) * self.full[slot])))

    def present(self, slot: str, training: bool) -> torch.Tensor | None:
        n = self.full[slot]
        count = min(n, math.floor(float(self.kappa[slot].detach()) * n) + 1) if training else self.eval_width(slot)
        return None if count >= n else torch.arange(n) < count

    def transform(self, x: torch.Tensor, mask) -> torch.Tensor:
        n = x.shape[mask.dim]
        if not mask.training:
            keep = self.eval_width(mask.slot)
            return x if keep >= n else torch.cat([x.narrow(mask.dim, 0, keep), torch.zeros_like(x.narrow(mask.dim, keep, n - keep))], mask.dim)
        width = self.kappa[mask.slot] * n
        k = min(int(width.detach().floor()), n)
        if k >= n:
            return x
        lam = (width - k).clamp(_LAM_EPS, 1 - _LAM_EPS)
        boundary = x.narrow(mask.dim, k, 1)
        sigma = boundary.detach().float().std(unbiased=False).clamp_min(1e-6)
        mixed = lam.sqrt() * boundary + (1 - lam).sqrt() * sigma * torch.randn_like(boundary)
        parts = [x.narrow(mask.dim, 0, k), mixed, torch.zeros_like(x.narrow(mask.dim, k + 1, n - k - 1))]
        return torch.cat(parts, mask.dim)

    def after_step(self, model: nn.Module, step: int) -> None:
        with torch.no_grad():
            for kappa in self.kappa.values():
                self.bound_reached |= bool(kappa < self.kappa_min)
                kappa.clamp_(self.kappa_min, 1.0)
        super().after_step(model, step)


@register_method("noise_injection")
class NoiseInjection(DynamicWidthMethod):
    description = "learn widths in training by feature noise injection + FLOP cost, then consolidate (the DCL method)"
    Config = NoiseInjectionConfig
    knob = "kappa_min"

    def validate(self, task) -> None:
        slots = self.resolve_slots(task)
        if self.config.budget is not None:
            from methods.dynamic.flops_model import FlopsModel

            flops = FlopsModel.for_task(task, slots)
            for kmin in self.config.kappa_min:
                floor = float(flops.ratio({s: max(1.0, kmin * task.width_slots()[s]) for s in slots}))
                if floor > self.config.budget:
                    raise ConfigError(f"noise_injection: budget {self.config.budget} cannot be met with kappa_min={kmin}: "
                                      f"at the lowest widths the model still costs {floor:.3f} of the dense FLOPs")

    def make_controller(self, task, slots, flops, knob: float) -> NoiseInjectionController:
        return NoiseInjectionController(task, slots, flops, self.config, knob)
