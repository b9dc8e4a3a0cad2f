"""Dense models trained once per (task, recipe, seed, steps): the baseline's candidate (the
run's whole budget) and the model both pruning methods start from (their pre-training
share of the budget, with its own schedule).

Runs of one method and seed differ only in the knob (the target), and magnitude and
structured pruning start from the same pre-trained model, so it is trained once: kept in the
run's shared state (`RunContext.shared`) and, when the store has a models folder, saved there (``pretrained/``) so
parallel worker processes and resumed jobs load it instead of training it again. A file
lock makes a second process wait for the first one's model rather than train its own.
Its training time is charged to every run that uses it (search cost), as if each had
trained it.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

import torch
from torch import nn

from bench.checkpoint import atomic_save
from bench.config import to_dict

KEEP = 4  # dense models held in memory (state dicts): runs of one process use one or two at a time


def pretrained_dense(ctx, steps: int | None = None) -> tuple[nn.Module, float]:
    """A dense model of `ctx.task` trained with `ctx.recipe` (for `steps` steps, with its own
    cosine schedule, if given) and `ctx.seed`, and the seconds it took."""
    model, report = dense_model(ctx, steps)
    return model, report["seconds"]


def dense_model(ctx, steps: int | None = None) -> tuple[nn.Module, dict]:
    """The dense model and its training report (seconds, steps, final_loss, loss_curve)."""
    task = ctx.task
    recipe = ctx.recipe if steps is None else replace(ctx.recipe, steps=steps)
    key = json.dumps(
        [task.name, to_dict(task.config), task.scale, str(task.data_root), to_dict(recipe), ctx.seed], sort_keys=True
    )
    # A forked generator: trained here or found in a cache, the caller's generator is left as it was.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(ctx.seed)
        model = task.build_model()
        return _load_or_train(ctx, model, key, recipe)


def _load_or_train(ctx, model: nn.Module, key: str, recipe) -> tuple[nn.Module, dict]:
    task = ctx.task
    folder = ctx.shared.models_dir
    path = folder / "pretrained" / f"{hashlib.sha256(key.encode()).hexdigest()[:20]}.pt" if folder else None

    def load_or_train() -> tuple[dict, dict]:
        with _locked(path):
            found = _read(path, key)
            if found is None:
                report = ctx.train(model, recipe=recipe, desc=f"{task.name} dense training ({recipe.steps} steps)")
                found = (
                    {k: v.detach().clone() for k, v in model.state_dict().items()},
                    {
                        "seconds": report.seconds,
                        "steps": report.steps,
                        "final_loss": report.final_loss,
                        "loss_curve": report.loss_curve,
                    },
                )
                _write(path, key, *found)
        return found

    state, report = ctx.shared.memo("dense_model", key, load_or_train, keep=KEEP)
    model.load_state_dict(state)
    return model.eval(), dict(report)


@contextmanager
def _locked(path: Path | None):
    if path is None:
        yield
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_suffix(".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes, also if the process dies
        yield


def _read(path: Path | None, key: str) -> tuple[dict, dict] | None:
    if path is None or not path.exists():
        return None
    payload = torch.load(path, map_location="cpu", weights_only=True)
    if payload.get("key") != key:  # a hash collision or a foreign file: train instead
        return None
    return payload["state_dict"], payload["report"]


def _write(path: Path | None, key: str, state: dict, report: dict) -> None:
    if path is None:
        return
    atomic_save({"key": key, "state_dict": state, "report": report}, path)  # a crash never leaves half a model
