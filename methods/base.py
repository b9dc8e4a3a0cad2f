"""The method interface: given a task, a seed and a training budget, yield candidates.

A candidate is a plain `nn.Module` at its final widths. The runner, not the method, trains
it (when `needs_training`), evaluates it, measures it with the one complexity counter and
stores it, so every method is measured the same way. A method that trains by itself
(noise injection, gates, pruning) calls `RunContext.train`, the shared loop, with its hooks.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import nn

from bench.config import TrainRecipe
from bench.device import default_device
from bench.training import TrainingHooks, TrainReport


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
    """What a method gets for one run."""

    task: Any  # a tasks.base.Task
    seed: int
    recipe: TrainRecipe  # the task's recipe after command-line overrides
    progress: bool = True
    store_url: str | None = None  # the result store's SQLAlchemy URL, for methods that keep state there (Optuna)
    run_key: str = ""  # this run's key in the store, e.g. to name an Optuna study
    models_dir: Path | None = None  # the store's models folder, for state shared between runs (pre-trained models)
    config: dict[str, Any] = field(default_factory=dict)  # the run's resolved config (task, method, train, scale)
    # Read-only view of the store's result rows (`ResultStore.rows`), for methods that build on
    # other runs' candidates; None where the run has no store.
    store_rows: Callable[..., list[dict[str, Any]]] | None = None
    device: torch.device = field(default_factory=default_device)  # where training and evaluation run (`--device`)
    # This run's value of the method's knob (one target, one bound): the runner makes one run
    # per value of the configured list and hands the method that one value, a scalar.
    knob: Any = None

    def train(
        self,
        model: nn.Module,
        hooks: TrainingHooks | None = None,
        recipe: TrainRecipe | None = None,
        desc: str = "train",
    ) -> TrainReport:
        """Train `model` in place with the shared loop (the run's recipe unless one is given)."""
        from bench.training import train

        return train(
            self.task,
            model,
            self.seed,
            recipe or self.recipe,
            hooks=hooks,
            progress=self.progress,
            desc=desc,
            device=self.device,
        )


class Method:
    """Base class of every method; subclasses register with `@register_method(name)`."""

    name: ClassVar[str]  # set by @register_method
    description: ClassVar[str] = ""  # one line for `bench list`
    Config: ClassVar[type]  # dataclass of the method's settings (`--set method.KEY=VALUE`)
    # Name of a list-valued Config field whose values are independent settings (e.g.
    # kappa_min): the runner makes one run per value, so each is resumed and scheduled alone.
    knob: ClassVar[str | None] = None
    # Name of the Config field holding FLOP/s targets (fractions of the dense model's FLOP/s),
    # e.g. the pruning ratios: `--targets` sets it for every such method at once.
    target_field: ClassVar[str | None] = None
    runs_after_others: ClassVar[bool] = False  # needs the other methods' finished runs: started after them
    per_model_family: ClassVar[bool] = True  # False: its result is the same for every model family (a reference)
    in_all: ClassVar[bool] = True  # part of `--method all` (False: an extra, run when named)
    runs_long: ClassVar[bool] = False  # one run trains many models (a search): parallel jobs start these first

    def __init__(self, config: Any | None = None):
        self.config = config if config is not None else self.Config()

    def applies_to(self, task: Any) -> bool:
        """False where the method makes no sense for `task` (e.g. a VAD reference on another
        task): `--method all` then leaves the pair out, and naming it is an error."""
        return True

    def validate(self, task: Any) -> None:
        """Reject settings that cannot work on `task` (raise `ConfigError`) before any training."""
        if hasattr(self.config, "slots"):
            self.resolve_slots(task)

    def check_budget(self, recipe: TrainRecipe) -> None:
        """Reject a training budget (`recipe.steps`) the method cannot split (raise
        `ConfigError`), before any training."""

    def resolve_slots(self, task: Any) -> list[str]:
        """The width slots the method acts on: `config.slots`, or all of the task's if empty."""
        from bench.config import ConfigError

        full = task.width_slots()
        unknown = [s for s in self.config.slots if s not in full]
        if unknown:
            raise ConfigError(
                f"{self.name}: task {task.name} has no width slot {unknown[0]!r}; slots: {', '.join(full)}"
            )
        return list(self.config.slots or full)

    def floor(self, task: Any) -> float | None:
        """The lowest FLOP ratio (of the dense model) the method can reach on `task`, for
        methods whose knob is such a ratio; None where there is no such bound."""
        return None

    def knob_values(self, task: Any) -> list[Any]:
        """The knob values to run on `task`: all of them, except that *default* values below
        `floor(task)` are left out with a note (runs that could only end at the floor).
        Values the user set are all run; `validate` may reject them."""
        if not self.knob:
            return []
        values = list(getattr(self.config, self.knob))
        if values != list(getattr(self.Config(), self.knob)):
            return values
        floor = self.floor(task)
        if floor is None:
            return values
        kept = [v for v in values if v >= floor]
        if len(kept) < len(values):
            print(
                f"{self.name}: default {self.knob} {[v for v in values if v < floor]} left out on task {task.name}: "
                f"below the {floor:.3f} of the dense FLOP/s it cannot go under",
                file=sys.stderr,
            )
        return kept

    def knob_value(self, ctx: RunContext) -> Any:
        """This run's knob value, a scalar: `ctx.knob` as the runner sets it, else the one value
        configured (a method called directly with a one-value list)."""
        if ctx.knob is not None:
            return ctx.knob
        values = list(getattr(self.config, self.knob))
        if len(values) != 1:
            raise ValueError(f"{self.name}: one run takes one {self.knob} value, got {values}; the runner splits lists")
        return values[0]

    def candidates(self, ctx: RunContext) -> Iterator[Candidate]:
        """Yield the candidates of one run."""
        raise NotImplementedError
