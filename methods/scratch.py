"""A from-scratch control: every architecture the other methods found, trained again from
random initialisation with the same budget.

A method's candidate is a shape (its widths) and weights. Training the shape alone, from a
fresh initialisation with the run's recipe (`train.steps`, the budget every candidate gets),
tells which of the two the method found: if the retrained model is as good, the shape
carried the gain; if it is worse, the method's weights did (inheritance from the dense
model, or what learning widths in training gave).

The runner starts these runs after all others, so the candidates of the same task, recipe
and seed are in the store; each distinct set of widths is trained once. Candidates that
keep the dense shape (unstructured sparsity, the dense model itself) are left out: their
shape is the baseline's. Not part of `--method all`: name it (`--method all scratch`).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

import torch

from bench.config import ConfigError
from bench.registry import register_method
from methods.base import Candidate, Method, RunContext


@dataclass(frozen=True)
class ScratchConfig:
    methods: list[str] = field(default_factory=list)  # whose architectures to retrain; empty = every method's

    def validate(self) -> None:
        if "scratch" in self.methods:
            raise ValueError("methods cannot name scratch itself")


@register_method("scratch")
class Scratch(Method):
    description = "control: retrain every architecture the other methods found from random initialisation, same budget"
    Config = ScratchConfig
    runs_after_others = True
    in_all = False

    def candidates(self, ctx: RunContext) -> Iterator[Candidate]:
        task = ctx.task
        if not ctx.shared.has_store:
            raise ConfigError("scratch: needs the result store of the runs whose architectures it retrains")
        trained: dict[tuple, tuple[torch.nn.Module, float]] = {}
        for row in self.sources(ctx):
            widths = task.resolve_widths(row["widths"])
            key = tuple(sorted(widths.items()))
            if key not in trained:
                torch.manual_seed(ctx.seed)
                model = task.build_model(widths)
                report = ctx.train(model, desc=f"{task.name}/scratch {','.join(f'{k}={v}' for k, v in widths.items())}")
                trained[key] = (model.eval(), report.seconds)
            model, seconds = trained[key]
            yield Candidate(
                model=model,
                widths=widths,
                label=f"{row['method']}:{row['label']}",
                train_seconds=seconds,
                train_steps=ctx.recipe.steps,
                info={
                    "architecture_of": row["method"],
                    "source_label": row["label"],
                    "source_error": row["error"],
                    "source_target_ratio": row["target_ratio"],
                    "source_run": row["run_key"],
                },
            )
        if not trained:
            raise RuntimeError(
                f"scratch: no finished candidate of another method with a shape other than the dense one for "
                f"task {task.name}, seed {ctx.seed} and this recipe; run the methods first"
            )

    def sources(self, ctx: RunContext) -> list[dict]:
        """The store's finished candidates of the same task config, recipe, scale and seed, of
        the chosen methods, whose widths differ from the dense model's."""
        full = ctx.task.width_slots()
        same = {k: ctx.config[k] for k in ("task", "train", "scale")}
        rows = [
            r
            for r in ctx.shared.rows(task=ctx.task.name)
            if r["status"] == "ok"
            and r["seed"] == ctx.seed
            and r["method"] != self.name
            and (not self.config.methods or r["method"] in self.config.methods)
            and {k: (r["config"] or {}).get(k) for k in same} == same
            and not (r["info"] or {}).get("reference")
            and ctx.task.resolve_widths(r["widths"] or {}) != full
        ]
        return sorted(rows, key=lambda r: (r["method"], r["candidate"] or 0))
