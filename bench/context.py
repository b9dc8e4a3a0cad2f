"""A `RunContext` wired to the shared training loop: how the runner, the sweep, benchmarks
and tests give a method its run."""

from __future__ import annotations

from typing import Any

from bench import training
from bench.contracts import RunContext
from bench.device import default_device
from bench.shared_state import SharedState


def run_context(task: Any, seed: int, recipe: Any, shared: SharedState | None = None, **fields: Any) -> RunContext:
    """The context of one run of `task`; `shared`: the state to share with other runs (a
    new, empty one if None); `fields`: RunContext's other fields (progress, run_key, ...).
    The device defaults to the one chosen on the command line (`--device`)."""
    fields.setdefault("device", default_device())
    # Looked up at call time, so a test that replaces bench.training.train sees every call.
    trainer = fields.pop("trainer", None) or (lambda *a, **k: training.train(*a, **k))
    return RunContext(task=task, seed=seed, recipe=recipe, shared=shared or SharedState(), trainer=trainer, **fields)
