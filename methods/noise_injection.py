"""Dynamic complexity layers (Gómez & Bäckström 2026): widths learned by feature noise injection.

Each dynamic slot of `N` features gets a trainable `kappa` in [kappa_min, 1] and a
continuous width `K = kappa * N`, `k = floor(K)`, `lam = K - k`. In training its features
become: 1..k unchanged; feature k+1 = sqrt(lam) * x + sqrt(1 - lam) * sigma * noise (the
variance-preserving mix, continuous in K, so the task loss has a gradient in kappa); the rest
zero. The FLOP cost (`FlopsModel`, fitted to the benchmark's counter) of the continuous
widths joins the loss: `cost_weight * |ratio - target|` toward a FLOP/s target (the
knob), or `cost_weight * ratio` for the paper's `kappa_min` grid. At evaluation there is no
noise and the first round(K) features are kept, which is exactly what consolidation keeps.

docs/method.md explains every choice and the measurements behind them; in short:
- `sigma` is the boundary feature's standard deviation over the batch (detached).
- `lam` is clamped to [1e-3, 1 - 1e-3] inside the square roots (finite kappa gradients).
- `kappa` has its own Adam group: no weight decay, short memories, a rate that can cross
  the range in a quarter of the recipe, held for half of it, then decayed
  (`WidthController.parameters`); clamped to its range after each step.
- The boundary noise is drawn once per slot and forward pass and reused at every mask of
  the slot (`slot_noise=shared`); a fresh draw per mask (`each`) or noise at the first mask
  only (`first`) are options, measured in docs/method.md.
- Features after the boundary one are not computed at all where the slot's layers allow
  it: their weights are narrowed to the live features (methods/dynamic/live_weights.py).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from bench.config import ConfigError
from bench.registry import register_method
from methods.dynamic.boundary_mix import BoundaryMix
from methods.dynamic.common import DynamicWidthMethod, WidthController
from tasks.base import FeatureBank, feature_banks

_LAM_EPS = 1e-3
SLOT_NOISE = ("shared", "first", "each")


@dataclass(frozen=True)
class NoiseInjectionConfig:
    target: list[float] = field(default_factory=lambda: [0.5, 0.25, 0.125])  # FLOP/s targets (of dense); one run each
    # the paper's grid instead of targets: one run per lower bound of kappa, plain FLOP cost
    kappa_min: list[float] = field(default_factory=list)
    cost_weight: float | None = None  # weight of the FLOP cost; None: 10 toward a target, 2 on the kappa_min grid
    slots: list[str] = field(default_factory=list)  # dynamic slots; empty = all of the task's slots
    preset: str = ""  # the paper's setup instead of `slots` (docs/method.md), e.g. paper
    width_lr: float | None = None  # learning rate of the kappas; None: crosses [0, 1] in a quarter of the recipe
    kappa_init: float = 1.0  # starting kappa (1 = full width)
    mel_bands: str = "low"  # low: the first K mel bands survive; spread: reordered so the first K span 0-8 kHz
    slot_noise: str = "shared"  # boundary noise: one draw per slot and pass (shared), per mask (each), first mask only
    # compute only the live features in training where the layers allow it (same model, faster); False: zero them
    live_weights: bool = True

    def validate(self) -> None:
        bad = [k for k in list(self.kappa_min) + list(self.target) if not 0 < k <= 1]
        if bad:
            raise ValueError(f"kappa_min and target values must be in (0, 1], got {bad[0]}")
        if self.kappa_min and self.target != NoiseInjectionConfig().target:
            raise ValueError("set either target (FLOP/s targets) or kappa_min (the paper's grid, no target), not both")
        if not self.kappa_min and not self.target:
            raise ValueError("give at least one target, or a kappa_min grid")
        if self.cost_weight is not None and self.cost_weight < 0:
            raise ValueError(f"cost_weight must be >= 0, got {self.cost_weight}")
        if not 0 < self.kappa_init <= 1:
            raise ValueError(f"kappa_init must be in (0, 1], got {self.kappa_init}")
        if self.mel_bands not in ("low", "spread"):
            raise ValueError(f"mel_bands must be low or spread, got {self.mel_bands!r}")
        if self.slot_noise not in SLOT_NOISE:
            raise ValueError(f"slot_noise must be one of {', '.join(SLOT_NOISE)}, got {self.slot_noise!r}")


class NoiseInjectionController(WidthController):
    """`target` set: the hinge toward it, kappa >= one feature; else the plain cost with
    kappa >= `kappa_min`. `ties`: groups of slots sharing one kappa (a preset's)."""

    def __init__(self, task, slots, flops, config, target=None, kappa_min: float = 0.0, steps: int = 120, ties=()):
        super().__init__(task, slots, flops, config, target, steps)
        self.group = {s: s for s in slots}
        for tie in ties:
            self.group.update({s: tie[0] for s in tie})
        self.low = {s: max(kappa_min, 1 / self.full[s]) for s in slots}  # at least one feature
        groups = sorted(set(self.group.values()), key=slots.index)
        start = {g: max(self.low[g], config.kappa_init) for g in groups}
        self.kappa = nn.ParameterDict({g: nn.Parameter(torch.tensor(start[g])) for g in groups})
        self._kappa_values = {g: float(k.detach()) for g, k in self.kappa.items()}  # last read, see `kappa_value`
        self._noise: dict[str, torch.Tensor] = {}  # this forward pass's boundary noise per slot
        self._mix: dict[str, tuple] = {}  # this forward pass's mix coefficients per slot
        self._live: dict[tuple[str, bool], int | None] = {}  # this forward pass's live feature counts
        self.slices_weights = config.live_weights

    @property
    def cost_weight(self) -> float:
        if self.config.cost_weight is not None:
            return self.config.cost_weight
        return 2.0 if self.target is None else 10.0

    def kappa_of(self, slot: str) -> nn.Parameter:
        return self.kappa[self.group[slot]]

    def kappa_value(self, slot: str) -> float:
        """The slot's kappa as a Python number, for the choices that need one (how many
        features a pass keeps), read from the parameter at each call. A tensor on the `meta`
        device holds no value: there the value last read stands (`to` reads it before a move),
        so a pass can be run on meta to check where its tensors live (tests/test_device_safety.py)."""
        group = self.group[slot]
        kappa = self.kappa[group]
        if not kappa.is_meta:
            self._kappa_values[group] = float(kappa.detach())
        return self._kappa_values[group]

    def to(self, device: torch.device | str) -> NoiseInjectionController:
        for slot in self.slots:
            self.kappa_value(slot)
        super().to(device)
        return self

    def bind(self, model: nn.Module) -> None:
        super().bind(model)
        model.register_forward_pre_hook(lambda module, args: self._start_pass())

    def _start_pass(self) -> None:
        """A fresh noise draw and fresh coefficients (kappa has moved) for each forward pass."""
        self._noise.clear()
        self._mix.clear()
        self._live.clear()

    def width_parameters(self) -> list[nn.Parameter]:
        return list(self.kappa.values())

    def width_modules(self) -> list[nn.Module]:
        return [self.kappa]

    def soft_widths(self) -> dict[str, torch.Tensor]:
        return {s: self.kappa_of(s) * self.full[s] for s in self.slots}

    def eval_width(self, slot: str) -> int:
        return max(1, min(self.full[slot], round(self.kappa_value(slot) * self.full[slot])))

    def floor_width(self, slot: str) -> int:
        """k = floor(K), from the host copy of kappa: the float32 product, rounded as on the device."""
        n = self.full[slot]
        return min(math.floor(np.float32(self.kappa_value(slot)) * np.float32(n)), n)

    def present(self, slot: str, training: bool) -> torch.Tensor | None:
        count = self.live_count(slot, training)
        return None if count is None else torch.arange(self.full[slot], device=self.kappa_of(slot).device) < count

    def live_count(self, slot: str, training: bool) -> int | None:
        """Training: the first k features and the boundary one; evaluation: round(K). None: all."""
        key = (slot, training)
        if key not in self._live:
            n = self.full[slot]
            count = min(n, self.floor_width(slot) + 1) if training else self.eval_width(slot)
            self._live[key] = None if count >= n else count
        return self._live[key]

    def boundary_noise(self, boundary: torch.Tensor, mask) -> torch.Tensor | None:
        """Unit noise for the boundary feature at `mask` (None: pass it unmixed). The slot's
        first mask in a forward pass draws it; later masks reuse it ("shared"), skip the
        mix ("first"), or draw their own ("each"). Layout: the slot's dim moved last, so
        masks over (B, d, T) and (B, T, d) share one draw per (batch, frame)."""
        slot, mode = mask.slot, self.config.slot_noise
        shape = boundary.movedim(mask.dim, -1).shape
        drawn = self._noise.get(slot)
        if drawn is not None and mode == "first":
            return None
        if drawn is None or mode == "each" or drawn.shape != shape:
            drawn = self._noise[slot] = torch.randn(shape, dtype=boundary.dtype, device=boundary.device)
        return drawn.movedim(-1, mask.dim)

    def transform(self, x: torch.Tensor, mask) -> torch.Tensor:
        return self._transform(x, mask, relu=False)

    def relu_transform(self, x: torch.Tensor, mask) -> torch.Tensor:
        """`transform` of `relu(x)`, in one pass over the activation in training."""
        return self._transform(x, mask, relu=True)

    def _transform(self, x: torch.Tensor, mask, relu: bool) -> torch.Tensor:
        n = x.shape[mask.dim]  # the slot's width, or its live count where its weights are sliced
        if not mask.training:
            x = torch.relu(x) if relu else x
            keep = self.eval_width(mask.slot)
            return (
                x
                if keep >= n
                else torch.cat(
                    [x.narrow(mask.dim, 0, keep), torch.zeros_like(x.narrow(mask.dim, keep, n - keep))], mask.dim
                )
            )
        k, a, b = self.mix_coefficients(mask.slot)
        if k >= n:
            return torch.relu(x) if relu else x
        boundary = x.narrow(mask.dim, k, 1)
        noise = self.boundary_noise(boundary, mask)
        if noise is None:  # pass the boundary feature unmixed
            return BoundaryMix.apply(x, x.new_ones(()), x.new_zeros(()), None, k, mask.dim, relu)
        # One autograd function (after the ReLU if `relu`) keeps the first k features, mixes the
        # boundary one (its noise scaled by the feature's std) and zeroes the rest.
        return BoundaryMix.apply(x, a, b, noise, k, mask.dim, relu)

    def mix_coefficients(self, slot: str) -> tuple[int, torch.Tensor | None, torch.Tensor | None]:
        """This pass's k = floor(K) and the mix's sqrt(lam), sqrt(1 - lam) for `slot`, computed
        at its first mask and reused at the others (fewer small operations)."""
        cached = self._mix.get(slot)
        if cached is None:
            n, k = self.full[slot], self.floor_width(slot)
            a = b = None
            if k < n:
                lam = (self.kappa_of(slot) * n - k).clamp(_LAM_EPS, 1 - _LAM_EPS)
                a, b = lam.sqrt(), (1 - lam).sqrt()
            cached = self._mix[slot] = (k, a, b)
        return cached

    def after_step(self, model: nn.Module, step: int) -> None:
        with torch.no_grad():
            for group, kappa in self.kappa.items():
                kappa.clamp_(max(self.low[s] for s in self.slots if self.group[s] == group), 1.0)
        super().after_step(model, step)


@register_method("noise_injection")
class NoiseInjection(DynamicWidthMethod):
    description = "learn widths in training by feature noise injection toward a FLOP/s target, then consolidate (DCL)"
    Config = NoiseInjectionConfig

    def __init__(self, config=None):
        super().__init__(config)
        if self.config.kappa_min:
            self.knob = "kappa_min"  # the paper's grid: one run per bound, no target

    def validate(self, task) -> None:
        super().validate(task)
        if self.config.mel_bands == "spread" and not _mel_front_ends(task.build_model()):
            raise ConfigError(f"noise_injection: mel_bands=spread needs a log-mel front end; task {task.name} has none")

    def prepare_model(self, model: nn.Module) -> None:
        """With `mel_bands=spread`, reorder the filterbank before training: the bands a
        consolidation keeps (the first K, persistent buffer rows) then span the full range."""
        if self.config.mel_bands == "spread":
            for logmel in _mel_front_ends(model):
                logmel.spread_features()

    def make_controller(self, task, slots, flops, knob: float, steps: int) -> NoiseInjectionController:
        if self.knob == "kappa_min":
            return NoiseInjectionController(task, slots, flops, self.config, None, knob, steps, self.ties(task))
        return NoiseInjectionController(task, slots, flops, self.config, knob, 0.0, steps, self.ties(task))


def _mel_front_ends(model: nn.Module) -> list[FeatureBank]:
    return feature_banks(model, spreadable=True)
