"""What passes between the runner and a method: the `RunContext` a run gets and the
`Candidate`s it yields. Like the other contracts (`bench.config`, `bench.hooks`,
`bench.registry`, `bench.shared_state`, `methods.base`, `tasks.base`), this module imports
nothing else from the project: the runner injects the training loop and the shared state.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from bench.config import TrainRecipe
from bench.hooks import TrainingHooks, TrainReport
from bench.shared_state import SharedState


@dataclass
class Candidate:
    """One model a method proposes."""

    model: nn.Module  # plain module at its final widths, no method-specific parts left
    widths: dict[str, int]  # slot name → width, so the task can rebuild the model
    label: str = ""  # short name of the knob setting, e.g. "kappa_min=0.25"
    needs_training: bool = False  # True: the runner trains it with the task's recipe
    train_seconds: float = 0.0  # training the method already spent on this model
    search_seconds: float = 0.0  # cost beyond that: pre-training, fine-tuning, search trials
    # Optimizer steps in the model's whole lineage (the dense pre-training it started from,
    # pruning steps, fine-tuning), before the runner trains it (`needs_training` adds the
    # recipe's steps). At default settings every method's candidates carry the same number.
    train_steps: int = 0
    search_steps: int = 0  # optimizer steps spent beyond the lineage (other search trials)
    target_ratio: float | None = (
        None  # the FLOP/s target asked for, as a fraction of the dense model's; None: no target
    )
    target_flops: str = "flops"  # the row column the target is met in: "flops", or "nonzero_flops" for sparse models
    info: dict[str, Any] = field(default_factory=dict)  # anything the method records (JSON-able)


@dataclass
class RunContext:
    """What a method gets for one run. Build it with `bench.context.run_context`, which
    wires in the shared training loop; a context without a trainer cannot train."""

    task: Any  # a tasks.base.Task
    seed: int
    recipe: TrainRecipe  # the task's recipe after command-line overrides
    progress: bool = True
    run_key: str = ""  # this run's key in the store, e.g. to name a search's study
    config: dict[str, Any] = field(default_factory=dict)  # the run's resolved config (task, method, train, scale)
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))  # where training and evaluation run
    # This run's value of the method's knob (one target, one bound): the runner makes one run
    # per value of the configured list and hands the method that one value, a scalar.
    knob: Any = None
    # Memos, the store's rows, its models folder and its study database, shared between runs.
    shared: SharedState = field(default_factory=SharedState)
    # The shared loop, `bench.training.train(task, model, seed, recipe, hooks=, progress=, desc=, device=)`.
    trainer: Callable[..., TrainReport] | None = None

    def train(
        self,
        model: nn.Module,
        hooks: TrainingHooks | None = None,
        recipe: TrainRecipe | None = None,
        desc: str = "train",
    ) -> TrainReport:
        """Train `model` in place with the shared loop (the run's recipe unless one is given)."""
        if self.trainer is None:
            raise RuntimeError("this RunContext has no trainer: build it with bench.context.run_context")
        return self.trainer(
            self.task,
            model,
            self.seed,
            recipe or self.recipe,
            hooks=hooks,
            progress=self.progress,
            desc=desc,
            device=self.device,
        )
