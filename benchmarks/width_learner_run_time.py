"""Wall time of whole width-learning training runs relative to the dense model's run.

Where `dynamic_step_time.py` times steps at one pinned width, this trains as the main job
does: the task's recipe, the widths learned from full toward each FLOP/s target; for noise
injection with the slots' weights narrowed to the live features (`live_weights`) or every
feature computed. In one process, a dense run comes before and after every width-learning run, and each
is set against the mean of those two, so that the machine's drift over minutes hits both
sides of a ratio alike; each run is timed by the training loop (`TrainReport.seconds`).

    python benchmarks/width_learner_run_time.py [--task antispoof] [--method noise_injection|stochastic_gates]
        [--rounds 2] [--steps N] [--targets 0.5 0.25 0.125] [--live-weights yes|no|both]
"""

from __future__ import annotations

import argparse
import platform
from dataclasses import replace

import torch

from bench.config import apply_overrides
from bench.registry import get_method_class, get_task_class
from bench.training import train
from methods.dynamic.flops_model import FlopsModel
from methods.noise_injection import NoiseInjectionConfig

WIDTH_LEARNERS = ("noise_injection", "stochastic_gates")


def run_seconds(task, recipe, method_name: str, target: float | None, live_weights: bool, seed: int):
    """Training seconds of one run (dense when `target` is None) and the widths it kept."""
    torch.manual_seed(seed)
    model = task.build_model()
    if target is None:
        return train(task, model, seed=seed, recipe=recipe, progress=False).seconds, task.resolve_widths(None)
    slots = list(task.width_slots())
    cls = get_method_class(method_name)
    config = replace(cls.Config(), target=[target])
    if hasattr(config, "live_weights"):
        config = replace(config, live_weights=live_weights)
    method = cls(config)
    controller = method.make_controller(task, slots, FlopsModel(task, slots), target, recipe.steps)
    controller.bind(model)
    controller.record_every = max(1, recipe.steps // 100)
    seconds = train(task, model, seed=seed, recipe=recipe, hooks=controller, progress=False).seconds
    return seconds, {s: len(i) for s, i in controller.keep().items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--task", default="antispoof")
    parser.add_argument("--method", default="noise_injection", choices=WIDTH_LEARNERS)
    parser.add_argument("--scale", default="small", help="the task's data and recipe scale")
    parser.add_argument("--set", dest="settings", nargs="*", default=[], help="task settings, e.g. model=transformer")
    parser.add_argument("--targets", type=float, nargs="+", default=NoiseInjectionConfig().target)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument(
        "--steps", type=int, help="steps per run instead of the recipe's (the width schedules scale with it)"
    )
    parser.add_argument("--threads", type=int, default=1, help="torch threads (the main job's default: 1)")
    parser.add_argument(
        "--live-weights",
        choices=("yes", "no", "both"),
        default="both",
        help="narrow sliceable slots' weights to the live features (yes: the default), compute every feature, or both",
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    cls = get_task_class(args.task)
    overrides = dict(s.split("=", 1) for s in args.settings)
    task = cls(apply_overrides(cls.Config(), overrides, f"task {args.task}"), scale=args.scale)
    recipe = replace(task.recipe(), steps=args.steps) if args.steps else task.recipe()
    print(
        f"machine: {platform.processor() or platform.machine()}, torch threads {torch.get_num_threads()}, "
        f"task {args.task} {overrides or ''} scale {args.scale}, {recipe.steps} steps per run"
    )
    lives = {"yes": [True], "no": [False], "both": [True, False]}[args.live_weights]
    if args.method != "noise_injection":
        lives = [False]  # the gates compute every feature
    for round_ in range(args.rounds):
        before, _ = run_seconds(task, recipe, args.method, None, True, seed=round_)
        for target in args.targets:
            for live in lives:
                seconds, widths = run_seconds(task, recipe, args.method, target, live, seed=round_)
                after, _ = run_seconds(task, recipe, args.method, None, True, seed=round_)
                print(
                    f"round {round_}: {args.method} target {target} live_weights={'yes' if live else 'no'}: "
                    f"{seconds:.1f} s, "
                    f"{seconds / ((before + after) / 2):.2f}x dense (dense before and after: {before:.1f} s, "
                    f"{after:.1f} s); widths {widths}",
                    flush=True,
                )
                before = after


if __name__ == "__main__":
    main()
