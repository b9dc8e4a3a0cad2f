"""The method interface: given a task, a seed and a training budget, yield candidates.

A candidate is a plain `nn.Module` at its final widths. The runner, not the method, trains
it (when `needs_training`), evaluates it, measures it with the one complexity counter and
stores it, so every method is measured the same way. A method that trains by itself
(noise injection, gates, pruning) calls `RunContext.train`, the shared loop, with its hooks.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from typing import Any, ClassVar

from bench.config import ConfigError, TrainRecipe
from bench.contracts import Candidate, RunContext

__all__ = ["Candidate", "Method", "RunContext"]  # a method module imports all three from here


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
    # True: a run is a study of independent trials, which `bench sweep` spreads over the cluster's
    # workers. Such a method also has `search_objectives` ((name, "min"|"max"), ...) and
    # implements `search_study(ctx)`, `prepare_search(ctx, study)`, `search_storage(ctx)`,
    # `trials_missing(study)`, `search_space(task)`, `run_search_trial(ctx, study, number,
    # params)` (its one objective) and `record_search_trial(trial, result)`;
    # `methods/optuna_search.py` is one.
    search: ClassVar[bool] = False

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
