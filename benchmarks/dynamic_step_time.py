"""Training-step time of a noise-injection (dynamic) model relative to the dense model.

Same task, same batches, same optimiser; dense and dynamic steps are timed in alternating
rounds within one process, so machine noise hits both alike. Goal: <= 1.3x. By default at
the recipe the main job trains with (scale small); `--live-weights no` computes every
feature and zeroes the dead ones, the cost that narrowing weights to the live features saves.

    python benchmarks/dynamic_step_time.py [--task synthetic vad ...] [--steps 30] [--rounds 5]
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time
from itertools import cycle

import torch
from torch.utils.data import DataLoader

from bench.registry import get_task_class, task_names
from methods.dynamic.flops_model import FlopsModel
from methods.noise_injection import NoiseInjectionConfig, NoiseInjectionController


def step_seconds(task, model, hooks, batches, steps: int, kappa: float | None = None) -> float:
    """Seconds per training step as the training loop takes it (the recipe's optimiser
    settings and gradient clipping). `kappa`: every width parameter is set back to it after
    each step, so that the step is timed at one width (left to learn, the width parameters
    would walk to their bound within a few dozen steps)."""
    recipe = task.recipe()
    params = hooks.parameters(model) if hooks else model.parameters()
    optimizer = torch.optim.AdamW(params, lr=recipe.lr, weight_decay=recipe.weight_decay)
    model.train()
    start = time.perf_counter()
    for _ in range(steps):
        loss = task.loss(model, next(batches))
        if hooks:
            loss = loss + hooks.extra_loss(model, 0)
        optimizer.zero_grad()
        loss.backward()
        if recipe.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), recipe.grad_clip)
        optimizer.step()
        if hooks:
            hooks.after_step(model, 0)
            with torch.no_grad():
                for width in hooks.width_parameters():
                    width.fill_(kappa)
    return (time.perf_counter() - start) / steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--task", nargs="+", default=task_names())
    parser.add_argument("--scale", default="small", help="the task's data and recipe scale (batch size)")
    parser.add_argument("--steps", type=int, default=30, help="steps per timed round")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--kappa", type=float, default=0.6, help="every slot's kappa (width as a share of full)")
    parser.add_argument("--set", dest="settings", nargs="*", default=[], help="task settings, e.g. model=transformer")
    parser.add_argument("--slot-noise", default=NoiseInjectionConfig().slot_noise, help="shared, each or first")
    parser.add_argument(
        "--live-weights", choices=("yes", "no"), default="yes", help="narrow sliceable slots' weights to live features"
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch threads; 1 by default: on a busy machine, multi-threaded tiny ops time thread wake-ups, not work",
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(
        f"machine: {platform.processor() or platform.machine()}, torch threads {torch.get_num_threads()}, "
        f"{args.rounds} rounds x {args.steps} steps each, median step time"
    )
    for name in args.task:
        cls = get_task_class(name)
        overrides = dict(
            s.split("=", 1) for s in args.settings if s.split("=", 1)[0] in cls.Config.__dataclass_fields__
        )
        from bench.config import apply_overrides

        task = cls(apply_overrides(cls.Config(), overrides, f"task {name}"), scale=args.scale)
        recipe = task.recipe()
        batches = cycle(DataLoader(task.dataset("train"), batch_size=recipe.batch_size, shuffle=True, drop_last=True))
        slots = list(task.width_slots())
        dense = task.build_model()
        dynamic = task.build_model()
        controller = NoiseInjectionController(
            task,
            slots,
            FlopsModel(task, slots),
            NoiseInjectionConfig(slot_noise=args.slot_noise, live_weights=args.live_weights == "yes"),
            kappa_min=0.0625,
        )
        with torch.no_grad():
            for kappa in controller.kappa.values():
                kappa.fill_(args.kappa)  # a boundary inside every slot: the mixing path is exercised
        controller.bind(dynamic)
        step_seconds(task, dense, None, batches, 3)  # warm-up
        step_seconds(task, dynamic, controller, batches, 3, args.kappa)
        times = {"dense": [], "dynamic": []}
        for _ in range(args.rounds):
            times["dense"].append(step_seconds(task, dense, None, batches, args.steps))
            times["dynamic"].append(step_seconds(task, dynamic, controller, batches, args.steps, args.kappa))
        widths = {s: controller.live_count(s, True) or controller.full[s] for s in slots}
        d, n = statistics.median(times["dense"]), statistics.median(times["dynamic"])
        label = f"{name} {overrides or ''} kappa={args.kappa} slot_noise={args.slot_noise}"
        label += f" live_weights={args.live_weights}"
        print(
            f"{label}: dense {d * 1e3:.2f} ms/step, dynamic {n * 1e3:.2f} ms/step, ratio {n / d:.2f}x "
            f"(goal <= 1.3x); live features {widths}, narrowed slots {controller.sliced}"
        )


if __name__ == "__main__":
    main()
