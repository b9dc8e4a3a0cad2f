"""Does noise injection find the synthetic task's true width?

The student (64 hidden units) fits a tanh teacher of `--teacher-width` units. With a weak
bound (kappa_min = 1/64: one unit) and no FLOP/s target (the plain cost
`cost_weight * FLOP ratio`), the learned width should settle near the teacher's over a
range of cost weights: a plateau. One training per weight; one line each, then
`learned widths: ...` (integers, in order of weight). `--plot` draws learned width against
cost weight for every teacher width given.

    python benchmarks/synthetic_width.py --teacher-width 12 24 [--weights 0.3 1 3 ...] \
        [--plot docs/figures/synthetic_width.png]
"""

from __future__ import annotations

import argparse
import time

import torch

from bench.training import train
from methods.dynamic.flops_model import FlopsModel
from methods.noise_injection import NoiseInjectionConfig, NoiseInjectionController
from tasks.synthetic import SyntheticConfig, SyntheticTask

WEIGHTS = [0.003, 0.01, 0.03, 0.1, 0.3, 1.0, 3.0]


def learned_width(
    teacher: int, cost_weight: float, seed: int = 0, scale: str = "small", steps: int | None = None
) -> tuple[int, float]:
    """(learned width, test NMSE) of noise injection with the plain cost at `cost_weight`."""
    task = SyntheticTask(SyntheticConfig(teacher_width=teacher), scale=scale)
    recipe = task.recipe() if steps is None else type(task.recipe())(**{**task.recipe().__dict__, "steps": steps})
    slots = list(task.width_slots())
    config = NoiseInjectionConfig(kappa_min=[1 / 64], cost_weight=cost_weight)
    flops = FlopsModel.for_task(task, slots)
    controller = NoiseInjectionController(task, slots, flops, config, None, 1 / 64, recipe.steps)
    torch.manual_seed(seed)
    model = task.build_model()
    controller.bind(model)
    train(task, model, seed, recipe, hooks=controller, progress=False)
    model.eval()
    return controller.eval_width("hidden"), task.evaluate(model).error


def plot(results: dict[int, list[int]], weights: list[float], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 3.5))
    for teacher, widths in sorted(results.items()):
        (line,) = ax.plot(weights, widths, "o-", label=f"learned, teacher {teacher}")
        ax.axhline(teacher, color=line.get_color(), ls="--", lw=1, label=f"teacher width {teacher}")
    ax.set_xscale("log")
    ax.set_xlabel("cost weight (plain FLOP cost, kappa_min = 1/64)")
    ax.set_ylabel("learned hidden width")
    ax.set_ylim(0, 64)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--teacher-width", type=int, nargs="+", default=[12])
    parser.add_argument("--weights", type=float, nargs="+", default=WEIGHTS)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--scale", default="small")
    parser.add_argument("--steps", type=int, default=None, help="training steps (default: the scale's recipe)")
    parser.add_argument("--plot", default=None, help="save learned width against cost weight here (png)")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    results = {}
    for teacher in args.teacher_width:
        widths = []
        for weight in args.weights:
            start = time.perf_counter()
            width, error = learned_width(teacher, weight, args.seed, args.scale, args.steps)
            widths.append(width)
            seconds = time.perf_counter() - start
            print(
                f"teacher {teacher} cost_weight {weight:g}: learned width {width}, "
                f"test NMSE {error:.4f} ({seconds:.0f} s)",
                flush=True,
            )
        results[teacher] = widths
    if args.plot:
        plot(results, args.weights, args.plot)
    for teacher in args.teacher_width:
        if len(args.teacher_width) > 1:
            print(f"teacher {teacher}:")
        print("learned widths: " + " ".join(str(w) for w in results[teacher]))


if __name__ == "__main__":
    main()
