"""Wall time of whole noise-injection training runs relative to the dense model's run.

Where `dynamic_step_time.py` times steps at one pinned width, this trains as the main job
does: the task's recipe, the widths learned from full toward each FLOP/s target, with the
slots' weights narrowed to the live features (`live_weights`) or every feature computed.
Each round runs the dense model, then every target both ways, in one process, so machine
noise hits all alike; each run is timed by the training loop (`TrainReport.seconds`).

    python benchmarks/width_learner_run_time.py [--task antispoof] [--rounds 2] [--targets 0.5 0.25 0.125]
"""

from __future__ import annotations

import argparse
import platform

import torch

from bench.config import apply_overrides
from bench.registry import get_task_class
from bench.training import train
from methods.dynamic.flops_model import FlopsModel
from methods.noise_injection import NoiseInjection, NoiseInjectionConfig


def run_seconds(task, target: float | None, live_weights: bool, seed: int) -> tuple[float, dict[str, int]]:
    """Training seconds of one run (dense when `target` is None) and the widths it kept."""
    torch.manual_seed(seed)
    model = task.build_model()
    if target is None:
        return train(task, model, seed=seed, progress=False).seconds, task.resolve_widths(None)
    slots = list(task.width_slots())
    method = NoiseInjection(NoiseInjectionConfig(target=[target], live_weights=live_weights))
    controller = method.make_controller(task, slots, FlopsModel(task, slots), target, task.recipe().steps)
    controller.bind(model)
    controller.record_every = max(1, task.recipe().steps // 100)
    seconds = train(task, model, seed=seed, hooks=controller, progress=False).seconds
    return seconds, {s: len(i) for s, i in controller.keep().items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--task", default="antispoof")
    parser.add_argument("--scale", default="small", help="the task's data and recipe scale")
    parser.add_argument("--set", dest="settings", nargs="*", default=[], help="task settings, e.g. model=transformer")
    parser.add_argument("--targets", type=float, nargs="+", default=NoiseInjectionConfig().target)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (the main job's default: 1)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    cls = get_task_class(args.task)
    overrides = dict(s.split("=", 1) for s in args.settings)
    task = cls(apply_overrides(cls.Config(), overrides, f"task {args.task}"), scale=args.scale)
    print(
        f"machine: {platform.processor() or platform.machine()}, torch threads {torch.get_num_threads()}, "
        f"task {args.task} {overrides or ''} scale {args.scale}, {task.recipe().steps} steps per run"
    )
    for round_ in range(args.rounds):
        dense, _ = run_seconds(task, None, True, seed=round_)
        print(f"round {round_}: dense {dense:.1f} s")
        for target in args.targets:
            for live in (True, False):
                seconds, widths = run_seconds(task, target, live, seed=round_)
                print(
                    f"round {round_}: target {target} live_weights={'yes' if live else 'no'}: {seconds:.1f} s, "
                    f"{seconds / dense:.2f}x dense; widths {widths}"
                )


if __name__ == "__main__":
    main()
