"""Stochastic gates (Yamada et al. 2020), the paper's comparison baseline, on the same slots.

Each feature i of a dynamic slot gets a gate `z_i = clamp(mu_i + eps_i, 0, 1)` with
`eps_i ~ N(0, s^2)` in training. The expected number of open gates, `sum Phi(mu_i / s)`
(the expected L0 norm), is the slot's soft width; the FLOP cost of those widths (the same
`FlopsModel` as noise injection) is penalised above a complexity budget, the method's knob.
After training, each slot keeps its expected number of open gates, `round(sum Phi(mu_i / s))`
-- the width its FLOP cost was computed from -- taking the features of largest `mu`, never
one with `mu <= 0`, at least one.

Choices, and why:
- Keep the expected L0, not every `mu > 0` (the rule once gates have converged, with `mu`
  far below 0 or above 1, where the two agree). In short trainings the `mu` sit between
  0 and 1 (on the VAD CRNN at budget 0.5 after 120 steps: all of them, median 0.1), so
  `mu > 0` kept every feature: dense FLOP/s, with the budget met only in expectation.
- At evaluation a kept gate is 1 (not `clamp(mu, 0, 1)`): the kept features then pass
  unscaled, so consolidation is pure selection and the consolidated model computes
  exactly what the gated model does.
- `eps` is drawn per feature and per forward pass (shared across the batch): one draw per
  gate per step, the cheapest estimator, and enough for these small models.
- The cost is `cost_weight * relu(FLOP ratio - budget)`: no pull below the budget, so the
  task alone decides inside it.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from bench.config import ConfigError
from bench.registry import register_method
from methods.dynamic.common import DynamicWidthMethod, WidthController


@dataclass(frozen=True)
class StochasticGatesConfig:
    budget: list[float] = field(default_factory=lambda: [0.5, 0.25, 0.125, 0.0625])  # FLOP budget (ratio of dense); one run per value
    cost_weight: float = 5.0  # weight of the penalty on FLOP ratio above the budget
    sigma: float = 0.5  # standard deviation s of the gate noise
    mu_init: float = 0.5  # starting gate mean (Yamada et al.)
    slots: list[str] = field(default_factory=list)  # gated slots; empty = all of the task's slots
    width_lr: float = 0.01  # learning rate of the gate means

    def validate(self) -> None:
        bad = [b for b in self.budget if not 0 < b <= 1]
        if bad:
            raise ValueError(f"budget must be in (0, 1], got {bad[0]}")
        if self.sigma <= 0 or self.cost_weight < 0:
            raise ValueError("sigma must be > 0 and cost_weight >= 0")


class GateController(WidthController):
    def __init__(self, task, slots, flops, config, budget: float):
        super().__init__(task, slots, flops, config)
        self.budget = budget
        self.bound_reached = False
        self.mu = nn.ParameterDict({s: nn.Parameter(torch.full((self.full[s],), config.mu_init)) for s in slots})
        self.normal = torch.distributions.Normal(0.0, 1.0)

    def cost(self) -> torch.Tensor:
        ratio = self.flops.ratio(self.soft_widths())
        self.bound_reached |= bool(ratio.detach() <= self.budget)  # the hinge is flat from here: the budget acts
        return torch.relu(ratio - self.budget)

    def width_parameters(self) -> list[nn.Parameter]:
        return list(self.mu.values())

    def soft_widths(self) -> dict[str, torch.Tensor]:
        return {s: self.normal.cdf(self.mu[s] / self.config.sigma).sum() for s in self.slots}

    def present(self, slot: str, training: bool) -> torch.Tensor | None:
        if training:
            return None  # every feature can open in training
        mu = self.mu[slot].detach()
        expected = round(float(self.normal.cdf(mu / self.config.sigma).sum()))
        k = max(1, min(expected, int((mu > 0).sum())))
        keep = torch.zeros_like(mu, dtype=torch.bool)
        keep[torch.argsort(mu, descending=True, stable=True)[:k]] = True
        return keep

    def transform(self, x: torch.Tensor, mask) -> torch.Tensor:
        shape = [1] * x.dim()
        shape[mask.dim] = x.shape[mask.dim]
        if mask.training:
            mu = self.mu[mask.slot]
            gate = (mu + self.config.sigma * torch.randn_like(mu)).clamp(0, 1)
        else:
            gate = self.present(mask.slot, training=False).to(x.dtype)
        return x * gate.reshape(shape)


@register_method("stochastic_gates")
class StochasticGates(DynamicWidthMethod):
    description = "per-feature stochastic gates with an expected-L0 FLOP penalty under a budget (the paper's SG baseline)"
    Config = StochasticGatesConfig
    knob = "budget"

    def floor(self, task) -> float:
        """FLOP ratio with one feature per gated slot: no budget below it can be met."""
        from methods.dynamic.flops_model import FlopsModel

        slots = self.resolve_slots(task)
        return float(FlopsModel.for_task(task, slots).ratio({s: 1.0 for s in slots}))

    def validate(self, task) -> None:
        if self.config.budget == StochasticGatesConfig().budget:
            return  # default budgets: the ones this task cannot meet are left out in knob_values
        floor = self.floor(task)
        for budget in self.config.budget:
            if budget < floor:
                raise ConfigError(f"stochastic_gates: budget {budget} cannot be met: with one feature per slot the model still costs {floor:.3f} of the dense FLOPs")

    def make_controller(self, task, slots, flops, knob: float) -> GateController:
        return GateController(task, slots, flops, self.config, knob)
