"""A regression task whose best width is known: a student MLP learns a narrower teacher.

The targets come from a random one-hidden-layer tanh teacher of `teacher_width` units (plus
a little noise). The student has the same form at `full_width` units. A student narrower
than the teacher cannot fit it; a wider one gains nothing. So a width-learning method
should end near `teacher_width`: the check that it finds the true width.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch
from torch import nn
from torch.utils.data import TensorDataset

from bench.config import TrainRecipe
from bench.device import model_device
from bench.registry import register_task
from tasks.base import Evaluation, Task, WidthMask

# Examples per split (train; val and test each) and the recipe per scale: smoke is for tests
# (seconds). Small converges: the dense model's val NMSE after 2000 steps is within 1 % of
# its NMSE after 4000 (benchmarks/convergence.py).
_SIZES = {"smoke": (2048, 512), "small": (8192, 2048), "full": (32768, 8192)}
_RECIPES = {
    "smoke": TrainRecipe(steps=800, batch_size=128, lr=3e-3),
    "small": TrainRecipe(steps=2000, batch_size=128, lr=1e-2),
    "full": TrainRecipe(steps=10000, batch_size=128, lr=3e-3),
}


@dataclass(frozen=True)
class SyntheticConfig:
    teacher_width: int = 12  # hidden units of the teacher: the width to be found
    full_width: int = 64  # hidden units of the full-size student
    in_features: int = 16  # input dimension
    out_features: int = 4  # regression outputs
    teacher_gain: float = 2.0  # scale of the teacher's first layer: >1 makes units nonlinear
    noise_std: float = 0.05  # target noise, relative to the target's standard deviation
    data_seed: int = 1234  # fixes teacher and data, the same for every method and run seed

    def validate(self) -> None:
        if not 1 <= self.teacher_width:
            raise ValueError(f"teacher_width must be >= 1, got {self.teacher_width}")
        if self.full_width < 1 or self.in_features < 1 or self.out_features < 1:
            raise ValueError("full_width, in_features and out_features must be >= 1")
        if self.noise_std < 0:
            raise ValueError(f"noise_std must be >= 0, got {self.noise_std}")


def mlp(in_features: int, hidden: int, out_features: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Linear(in_features, hidden), nn.Tanh(), WidthMask("hidden"), nn.Linear(hidden, out_features)
    )


@register_task("synthetic")
class SyntheticTask(Task):
    description = "student MLP (full width 64) fits a tanh teacher of known hidden width (12); error = normalised MSE"
    Config = SyntheticConfig
    metric = "nmse"
    metric_label = "NMSE"
    iso_tolerance = 0.005  # R^2 falling by at most half a point
    breakdown_label = "output"
    chance_error = 1.0  # predicting the mean
    example_seconds = None  # not audio: FLOPs are per example

    def width_slots(self) -> dict[str, int]:
        return {"hidden": self.config.full_width}

    def build_model(self, widths: Mapping[str, int] | None = None) -> nn.Module:
        w = self.resolve_widths(widths)
        return mlp(self.config.in_features, w["hidden"], self.config.out_features)

    def recipe(self) -> TrainRecipe:
        return _RECIPES[self.scale]

    def _data(self) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        if not hasattr(self, "_cache"):
            self._cache = self._generate()
        return self._cache

    def _generate(self) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        c = self.config
        g = torch.Generator().manual_seed(c.data_seed)
        teacher = mlp(c.in_features, c.teacher_width, c.out_features)
        with torch.no_grad():
            first, last = teacher[0], teacher[-1]
            first.weight.copy_(
                torch.randn(c.teacher_width, c.in_features, generator=g) * c.teacher_gain / c.in_features**0.5
            )
            first.bias.copy_(torch.randn(c.teacher_width, generator=g) * 0.5)
            last.weight.copy_(torch.randn(c.out_features, c.teacher_width, generator=g) / c.teacher_width**0.5)
            last.bias.zero_()
        n_train, n_eval = _SIZES[self.scale]
        splits = {}
        for split, n in (("train", n_train), ("val", n_eval), ("test", n_eval)):
            x = torch.randn(n, c.in_features, generator=g)
            with torch.no_grad():
                y = teacher(x)
            splits[split] = (x, y)
        # Standardise targets with training statistics so the error is a fraction of variance.
        mean, std = splits["train"][1].mean(0), splits["train"][1].std(0)
        for split, (x, y) in splits.items():
            y = (y - mean) / std
            splits[split] = (x, y + c.noise_std * torch.randn(y.shape, generator=g))
        return splits

    def dataset(self, split: str) -> TensorDataset:
        return TensorDataset(*self._data()[split])

    def loss(self, model: nn.Module, batch) -> torch.Tensor:
        x, y = batch
        return nn.functional.mse_loss(model(x), y)

    @torch.no_grad()
    def evaluate(self, model: nn.Module, split: str = "test") -> Evaluation:
        x, y = (t.to(model_device(model)) for t in self._data()[split])
        residual = model(x) - y
        per_output = residual.pow(2).mean(0) / y.var(0)
        return Evaluation(
            error=per_output.mean().item(),
            breakdowns={f"output_{i}": v.item() for i, v in enumerate(per_output)},
        )

    def example_input(self) -> torch.Tensor:
        return torch.zeros(1, self.config.in_features)
