"""Stochastic gates (Yamada et al. 2020), the paper's comparison baseline, on the same slots.

Each feature i of a dynamic slot gets a gate `z_i = clamp(mu_i + eps_i, 0, 1)` with
`eps_i ~ N(0, s^2)` in training. The expected number of open gates, `sum Phi(mu_i / s)`
(the expected L0 norm), is the slot's soft width; the FLOP cost of those widths (the same
`FlopsModel` as noise injection) is held at a FLOP/s target, the knob:
`cost_weight * |ratio - target|`. After training, each slot keeps its expected number
of open gates, `round(sum Phi(mu_i / s))` -- the width the cost was computed from, so the
candidate lands on its target -- taking the features of largest `mu`, at least one.

Choices (docs/method.md has the measurements):
- The gate means have their own Adam group (`WidthController.parameters`), with a rate
  that can move a mean across 4 s in a quarter of the recipe. Under the weights' cosine
  decay with lr 0.01 they stayed between 0 and 1 after 120 steps.
- The noise s shrinks from `sigma` to `sigma_end` over the first 3/4 of the recipe, so the
  gates saturate (|mu| > 2 s; the share is recorded as `saturated_gates`): at a fixed
  s = 0.5, 2-5% of the gates on VAD had.
- A gate is 0 or 1 in the forward pass (`mu + eps > 0`), with a straight-through
  gradient: with the clamped value itself the kept gates ended at a mean of 0.3-0.4, so
  the features were scaled in training and not at evaluation. Evaluation passes a kept
  feature as 1, so consolidation is pure selection.
- The straight-through gradient is the identity (`straight_through`; "clamp" is the
  clamp's gradient): with the clamp's, a gate once shut (mu + eps < 0) hears only the
  cost, cannot reopen, and whole slots collapsed (VAD CRNN conv2 at 2-5 features).
- Keep the expected L0, never "mu > 0" alone: with gates still near 0 that rule kept far
  fewer features than the cost counted, and the candidate fell far under its target.
  Once gates are saturated the two rules agree.
- A binarization term `beta * sum Phi(mu/s)(1 - Phi(mu/s))` (a gate's Bernoulli variance,
  zero when saturated; `binarize`, over the last `binarize_share` of the recipe) while the
  cost holds the count, and from `fix_share` of the recipe on the gates are fixed at the
  keep rule's features (no noise, no cost), so the weights train on the architecture they
  are evaluated with. Without these three (the clamp's gradient, no term, never fixed)
  the gates did not saturate in the `small` recipe (18-92 %) and the VAD CRNN candidates
  ended near 21 % EER; with them every gate is saturated when fixed. docs/method.md has the
  measurements of each option alone.
- `eps` is drawn per feature and per forward pass (shared across the batch).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from torch import nn

from bench.registry import register_method
from methods.dynamic.common import DynamicWidthMethod, WidthController

ANNEAL_SHARE = 0.75  # share of the recipe over which the gate noise shrinks to sigma_end


def normal_cdf(x: torch.Tensor) -> torch.Tensor:
    """The standard normal CDF on `x`'s device: `torch.distributions.Normal(0, 1).cdf`'s formula,
    without its CPU parameters and its argument check (a host sync per call on a GPU)."""
    return 0.5 * (1 + torch.erf(x / math.sqrt(2)))


@dataclass(frozen=True)
class StochasticGatesConfig:
    target: list[float] = field(default_factory=lambda: [0.5, 0.25, 0.125])  # FLOP/s targets (of dense); one run each
    cost_weight: float = 10.0  # weight of the FLOP cost |ratio - target|
    sigma: float = 0.5  # standard deviation s of the gate noise at the start
    sigma_end: float = 0.05  # s at the end: annealed geometrically over the first 3/4 of the recipe, then held
    mu_init: float = 0.5  # starting gate mean (Yamada et al.)
    slots: list[str] = field(default_factory=list)  # gated slots; empty = all of the task's slots
    preset: str = ""  # the paper's setup instead of `slots` (docs/method.md), e.g. paper
    width_lr: float | None = None  # learning rate of the gate means; None: crosses 4 sigma in a quarter of the recipe
    fix_share: float = 0.5  # from this share of the recipe on, the keep rule fixes the gates (0/1, no noise); 1: never
    binarize: float = 1.0  # weight beta of the term beta * sum Phi(mu/s)(1 - Phi(mu/s)) (a gate's Bernoulli variance)
    straight_through: str = "identity"  # gate gradient: "identity", or the clamp's (0 where mu + eps is out of [0, 1])
    binarize_share: float = 0.75  # the term acts in this last share of the recipe, ramped in over its first half

    def validate(self) -> None:
        bad = [b for b in self.target if not 0 < b <= 1]
        if bad:
            raise ValueError(f"target must be in (0, 1], got {bad[0]}")
        if not self.target:
            raise ValueError("give at least one target")
        if not 0 < self.sigma_end <= self.sigma or self.cost_weight < 0:
            raise ValueError("need 0 < sigma_end <= sigma and cost_weight >= 0")
        if not 0 < self.fix_share <= 1 or not 0 < self.binarize_share <= 1 or self.binarize < 0:
            raise ValueError("need 0 < fix_share <= 1, 0 < binarize_share <= 1 and binarize >= 0")
        if self.straight_through not in ("clamp", "identity"):
            raise ValueError(f"straight_through must be clamp or identity, got {self.straight_through!r}")


class GateController(WidthController):
    def __init__(self, task, slots, flops, config, target: float | None = 0.5, steps: int = 120):
        super().__init__(task, slots, flops, config, target, steps)
        self.span = 4 * config.sigma
        self.mu = nn.ParameterDict({s: nn.Parameter(torch.full((self.full[s],), config.mu_init)) for s in slots})
        self.sigma = config.sigma
        self.fixed: dict[str, torch.Tensor] | None = None  # each slot's kept features once the gates are fixed
        self.fix_info: dict[str, float] = {}

    def after_step(self, model: nn.Module, step: int) -> None:
        share = min(1.0, (step + 1) / (ANNEAL_SHARE * self.steps))
        self.sigma = self.config.sigma * (self.config.sigma_end / self.config.sigma) ** share
        if self.fixed is None and self.config.fix_share < 1 and step + 1 >= self.config.fix_share * self.steps:
            self.fix(step + 1)
        super().after_step(model, step)

    def fix(self, step: int) -> None:
        """Fix every slot's gates at the keep rule's features: from here on training sees the
        final architecture (kept = 1, others = 0, recurrent weights masked) and the means stop."""
        self.fix_info = {"fixed_at_step": step, **{f"{k}_at_fix": v for k, v in self.summary().items()}}
        keep = {s: self.keep_rule(s) for s in self.slots}
        self.fix_info["ratio_at_fix"] = self.hard_ratio(keep)
        self.fixed = self.project(keep) if self.target is not None else keep

    def hard_ratio(self, keep: dict[str, torch.Tensor]) -> float:
        return float(self.flops.ratio({s: int(k.sum()) for s, k in keep.items()}))

    def project(self, keep: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Move the kept features toward the target one at a time, while that brings the
        FLOP ratio closer: over it, drop the kept feature of lowest `mu` (each slot keeps
        one); under it, add the dropped feature of highest `mu`. When the task's gradient
        holds one slot's gates open after the cheaper slots have shut (VAD transformer,
        target 0.125: `ffn` and `head_dim` at 1, the model width at 71 of 80, ratio 0.21),
        the cost balance settles away from the target; this meets it before the weights
        train on the fixed architecture. `projected_features` records how many moved."""
        keep = {s: k.clone() for s, k in keep.items()}
        ratio, moved = self.hard_ratio(keep), 0
        while True:
            over = ratio > self.target
            choices = []
            for s in self.slots:
                mu = self.mu[s].detach()
                pool = keep[s] if over else ~keep[s]
                if over and int(pool.sum()) <= 1 or not over and not bool(pool.any()):
                    continue
                masked = mu.masked_fill(~pool, math.inf if over else -math.inf)
                i = int(masked.argmin() if over else masked.argmax())
                choices.append((float(mu[i]), s, i))
            if not choices:
                break
            _, slot, i = min(choices) if over else max(choices)
            keep[slot][i] = not over
            moved_ratio = self.hard_ratio(keep)
            if abs(moved_ratio - self.target) >= abs(ratio - self.target):
                keep[slot][i] = over  # no closer: undo and stop
                break
            ratio, moved = moved_ratio, moved + 1
        self.fix_info.update(projected_features=moved, ratio_projected=ratio)
        return keep

    def binarize_loss(self, step: int) -> torch.Tensor | None:
        """`beta * sum Phi(mu/s)(1 - Phi(mu/s))`, zero for saturated gates, ramped in."""
        c = self.config
        start = 1 - c.binarize_share
        progress = (step + 1) / self.steps
        if c.binarize == 0 or progress <= start or self.fixed is not None:
            return None
        weight = c.binarize * min(1.0, (progress - start) / (c.binarize_share / 2))
        p = torch.cat([normal_cdf(self.mu[s] / self.sigma) for s in self.slots])
        return weight * (p * (1 - p)).sum()

    def extra_loss(self, model: nn.Module, step: int) -> torch.Tensor | None:
        if self.fixed is not None:
            return None  # the widths are decided: no cost gradient to the means
        loss = super().extra_loss(model, step)
        term = self.binarize_loss(step)
        return loss if term is None else loss + term

    def width_parameters(self) -> list[nn.Parameter]:
        return list(self.mu.values())

    def width_modules(self) -> list[nn.Module]:
        return [self.mu]

    def soft_widths(self) -> dict[str, torch.Tensor]:
        if self.fixed is not None:
            return {s: self.fixed[s].sum().to(self.mu[s].dtype) for s in self.slots}
        return {s: normal_cdf(self.mu[s] / self.sigma).sum() for s in self.slots}

    def present(self, slot: str, training: bool) -> torch.Tensor | None:
        if self.fixed is not None:
            return self.fixed[slot]
        if training:
            return None  # every feature can open in training
        return self.keep_rule(slot)

    def keep_rule(self, slot: str) -> torch.Tensor:
        """The `round(sum Phi(mu / s))` features of largest `mu` (at least one)."""
        mu = self.mu[slot].detach()
        k = max(1, round(float(normal_cdf(mu / self.sigma).sum())))
        keep = torch.zeros_like(mu, dtype=torch.bool)
        keep[torch.argsort(mu, descending=True, stable=True)[:k]] = True
        return keep

    def transform(self, x: torch.Tensor, mask) -> torch.Tensor:
        shape = [1] * x.dim()
        shape[mask.dim] = x.shape[mask.dim]
        if mask.training and self.fixed is None:
            mu = self.mu[mask.slot]
            soft = (mu + self.sigma * torch.randn_like(mu)).clamp(0, 1)
            if self.config.straight_through == "identity":
                soft = mu + self.sigma * torch.randn_like(mu)
            gate = (soft > 0).to(soft.dtype) + soft - soft.detach()  # 0 or 1 forward, the clamp's gradient back
        else:
            gate = self.present(mask.slot, training=False).to(x.dtype)
        return x * gate.reshape(shape)

    def summary(self) -> dict[str, float]:
        """`saturated_gates`: share of gates open or shut in 95% of draws (|mu| > 2 s)."""
        mu = torch.cat([m.detach() for m in self.mu.values()])
        return {
            "saturated_gates": float((mu.abs() > 2 * self.sigma).float().mean()),
            "final_sigma": self.sigma,
            **self.fix_info,
        }


@register_method("stochastic_gates")
class StochasticGates(DynamicWidthMethod):
    description = "per-feature stochastic gates, expected-L0 FLOP/s held at a target (the paper's SG baseline)"
    Config = StochasticGatesConfig

    def make_controller(self, task, slots, flops, knob: float, steps: int) -> GateController:
        return GateController(task, slots, flops, self.config, knob, steps)
