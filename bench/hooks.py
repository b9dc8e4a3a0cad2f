"""What a method plugs into the shared training loop (`bench.training.train`), and what it gets back."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn


class NonFiniteLossError(RuntimeError):
    """The training loss became NaN or infinite; the run is stored as failed."""


class TrainingHooks:
    """Hooks a method may override; each has a fixed signature and a no-op default."""

    def parameters(self, model: nn.Module) -> list[dict[str, Any]] | None:
        """Optimiser parameter groups, or None for all of `model.parameters()`. A group may set
        "schedule" to a key of `bench.training.SCHEDULES` (default "cosine")."""
        return None

    def extra_loss(self, model: nn.Module, step: int) -> torch.Tensor | None:
        """A term added to the task loss at `step` (e.g. a FLOP/s penalty), or None."""
        return None

    def after_step(self, model: nn.Module, step: int) -> None:
        """Called after each optimiser step (e.g. to clamp parameters or log a trajectory)."""


@dataclass
class TrainReport:
    steps: int  # optimiser steps taken
    seconds: float  # wall-clock training time
    final_loss: float  # mean task loss over the last 10% of steps
    loss_curve: list[float] = field(default_factory=list)  # mean task loss per 5% of training
