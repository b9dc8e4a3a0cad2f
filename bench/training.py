"""The one training loop every method uses, with a fixed, small set of hooks.

Methods that change training (noise injection, gates, pruning) plug in through
`TrainingHooks`; the loop, optimiser and schedule come from the task's `TrainRecipe`, so
all methods train the same way.
"""

from __future__ import annotations

import math
import time
from typing import Any

import torch
from torch import nn
from torch.utils.data import BatchSampler, DataLoader, Dataset, RandomSampler, TensorDataset
from tqdm.auto import tqdm

from bench.config import TrainRecipe
from bench.device import model_device, to_device
from bench.hooks import NonFiniteLossError, TrainingHooks, TrainReport

# Learning-rate multiplier per step, by a parameter group's "schedule" key (default cosine):
# a hook's group (e.g. learned widths) may keep its own rate while the weights decay.
SCHEDULES = {
    "cosine": lambda step, steps: 0.5 * (1 + math.cos(math.pi * step / steps)),
    "constant": lambda step, steps: 1.0,
    # constant for the first half, then a cosine decay to zero: reach a balance fast, then settle on it
    "hold_cosine": lambda step, steps: 0.5 * (1 + math.cos(math.pi * max(0.0, 2 * step / steps - 1))),
}


def seed_everything(seed: int) -> None:
    import random

    import numpy as np

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _loader(dataset: Dataset, batch_size: int, generator: torch.Generator, pin: bool = False) -> DataLoader:
    """Shuffled batches, `drop_last`. A dataset that takes a list of indices (tensor-backed:
    TensorDataset, or one marked `batch_indexing = True`) is indexed once per batch: item by
    item, the Python overhead of a small model's step is larger than the step itself."""
    if isinstance(dataset, TensorDataset) or getattr(dataset, "batch_indexing", False):
        batches = BatchSampler(RandomSampler(dataset, generator=generator), batch_size, drop_last=True)
        return DataLoader(
            dataset, sampler=batches, batch_size=None, generator=generator, pin_memory=pin
        )  # the same batches as shuffle=True
    return DataLoader(dataset, batch_size=batch_size, shuffle=True, drop_last=True, generator=generator, pin_memory=pin)


def _forever(loader: DataLoader):
    """Batches epoch after epoch, reshuffled each epoch."""
    while True:
        yield from loader


def _scheduled(shape, steps: int):
    """The LambdaLR factor of one param group: `shape` (a SCHEDULES entry) over `steps`."""
    return lambda step: shape(step, steps)


def train(
    task: Any,
    model: nn.Module,
    seed: int,
    recipe: TrainRecipe | None = None,
    hooks: TrainingHooks | None = None,
    progress: bool = True,
    desc: str = "train",
    device: torch.device | str | None = None,
) -> TrainReport:
    """Train `model` in place on `task`'s training split, on `device` (unset: where the model is);
    raise `NonFiniteLossError` on NaN/inf. Batches are moved to the device as they are drawn."""
    recipe = recipe or task.recipe()
    hooks = hooks or TrainingHooks()
    device = torch.device(device) if device is not None else model_device(model)
    model.to(device)
    generator = torch.Generator().manual_seed(seed)
    loader = _loader(task.dataset("train"), recipe.batch_size, generator, pin=device.type == "cuda")
    if len(loader) == 0:
        raise ValueError(f"training split of {task.name} has fewer examples than batch_size={recipe.batch_size}")
    params = hooks.parameters(model) or model.parameters()
    optimizer = torch.optim.AdamW(params, lr=recipe.lr, weight_decay=recipe.weight_decay)
    lambdas = [_scheduled(SCHEDULES[g.get("schedule", "cosine")], recipe.steps) for g in optimizer.param_groups]
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambdas)
    model.train()
    losses: list[float] = []
    start = time.perf_counter()
    batches = _forever(loader)
    bar = tqdm(range(recipe.steps), desc=desc, leave=False, disable=not progress or None, dynamic_ncols=True)
    for step in bar:
        loss = task.loss(model, to_device(next(batches), device))
        if not torch.isfinite(loss):
            raise NonFiniteLossError(f"training loss became {loss.item()} at step {step} (try a lower train.lr)")
        losses.append(loss.item())
        extra = hooks.extra_loss(model, step)
        total = loss if extra is None else loss + extra
        optimizer.zero_grad(set_to_none=True)
        total.backward()
        if recipe.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), recipe.grad_clip)
        optimizer.step()
        schedule.step()
        hooks.after_step(model, step)
        if step % 50 == 0:
            bar.set_postfix(loss=f"{loss.item():.4g}")
    seconds = time.perf_counter() - start
    model.eval()
    chunk = max(1, len(losses) // 20)
    curve = [sum(losses[i : i + chunk]) / len(losses[i : i + chunk]) for i in range(0, len(losses), chunk)]
    tail = losses[-max(1, len(losses) // 10) :]
    return TrainReport(steps=recipe.steps, seconds=seconds, final_loss=sum(tail) / len(tail), loss_curve=curve)
