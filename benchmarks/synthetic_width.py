"""Does noise injection find the synthetic task's true width?

The student (64 hidden units) fits a tanh teacher of `--teacher-width` units. With a weak
bound (kappa_min = 1/64: one unit) and no FLOP/s target (the plain cost
`cost_weight * FLOP ratio`), the learned width should settle at the teacher's over a range
of cost weights: a plateau. One training per weight; one line each, then
`learned widths: ...` (integers, in order of weight). `--plot` draws learned width against
cost weight for every teacher width given.

Two settings differ from the task's and the method's defaults, because the plateau needs
both (RESULTS.md has the measurements):
- 64 inputs and 64 outputs (`--in-features`, `--out-features`; the task's default is 16
  and 4). Then each teacher unit carries its own direction of the map: a fixed-width
  student's error falls steeply up to the teacher's width and is flat after it. With 4
  outputs the map is close to rank 4, 4 units already fit most of it, and the learned
  width falls steadily with the weight.
- kappa starts narrow (`--kappa-init 0.05`, about 3 units; the method's default is 1, the
  full width). Growing from below, a unit is added while its loss gain exceeds its FLOP
  cost, so the width stops at the teacher's. Started at the full width, the fit is spread
  over all units and units above the teacher's width are kept at low weights.

    python benchmarks/synthetic_width.py --teacher-width 12 24 [--weights 0.01 0.03 0.1 ...] \
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

WEIGHTS = [0.01, 0.03, 0.1, 0.3, 1.0, 3.0, 10.0]
TASK_DEFAULTS = {"in_features": 64, "out_features": 64}  # over SyntheticConfig's defaults, see above
KAPPA_INIT = 0.05
FIELDS = ("full_width", "in_features", "out_features", "teacher_gain", "noise_std", "data_seed")  # options


def add_task_options(parser: argparse.ArgumentParser) -> None:
    """--full-width, --in-features, ...: the task config's fields, defaults TASK_DEFAULTS over the task's."""
    defaults = {**SyntheticConfig().__dict__, **TASK_DEFAULTS}
    for name in FIELDS:
        parser.add_argument(
            "--" + name.replace("_", "-"),
            type=type(defaults[name]),
            default=defaults[name],
            help="task config (default %(default)s)",
        )


def config_from(args: argparse.Namespace, teacher: int) -> SyntheticConfig:
    config = SyntheticConfig(teacher_width=teacher, **{f: getattr(args, f) for f in FIELDS})
    config.validate()
    return config


def learned_width(
    task_config: SyntheticConfig,
    cost_weight: float,
    seed: int = 0,
    scale: str = "small",
    steps: int | None = None,
    kappa_init: float = KAPPA_INIT,
) -> tuple[int, float]:
    """(learned width, test NMSE) of noise injection with the plain cost at `cost_weight`."""
    task = SyntheticTask(task_config, scale=scale)
    recipe = task.recipe() if steps is None else type(task.recipe())(**{**task.recipe().__dict__, "steps": steps})
    slots = list(task.width_slots())
    kappa_min = 1 / task_config.full_width
    config = NoiseInjectionConfig(kappa_min=[kappa_min], cost_weight=cost_weight, kappa_init=kappa_init)
    flops = FlopsModel.for_task(task, slots)
    controller = NoiseInjectionController(task, slots, flops, config, None, kappa_min, recipe.steps)
    torch.manual_seed(seed)
    model = task.build_model()
    controller.bind(model)
    train(task, model, seed, recipe, hooks=controller, progress=False)
    model.eval()
    return controller.eval_width("hidden"), task.evaluate(model).error


def plot(results: dict[int, list[int]], weights: list[float], full_width: int, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 3.5))
    for teacher, widths in sorted(results.items()):
        (line,) = ax.plot(weights, widths, "o-", label=f"learned, teacher {teacher}")
        ax.axhline(teacher, color=line.get_color(), ls="--", lw=1, label=f"teacher width {teacher}")
    ax.set_xscale("log")
    ax.set_xlabel(f"cost weight (plain FLOP cost, kappa_min = 1/{full_width})")
    ax.set_ylabel("learned hidden width")
    ax.set_ylim(0, full_width)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--teacher-width", type=int, nargs="+", default=[12])
    parser.add_argument("--weights", type=float, nargs="+", default=WEIGHTS)
    add_task_options(parser)
    parser.add_argument("--kappa-init", type=float, default=KAPPA_INIT, help="starting kappa (default %(default)s)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--scale", default="small")
    parser.add_argument("--steps", type=int, default=None, help="training steps (default: the scale's recipe)")
    parser.add_argument("--plot", default=None, help="save learned width against cost weight here (png)")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    results = {}
    for teacher in args.teacher_width:
        task_config = config_from(args, teacher)
        widths = []
        for weight in args.weights:
            start = time.perf_counter()
            width, error = learned_width(task_config, weight, args.seed, args.scale, args.steps, args.kappa_init)
            widths.append(width)
            seconds = time.perf_counter() - start
            print(
                f"teacher {teacher} cost_weight {weight:g}: learned width {width}, "
                f"test NMSE {error:.4f} ({seconds:.0f} s)",
                flush=True,
            )
        results[teacher] = widths
    if args.plot:
        plot(results, args.weights, args.full_width, args.plot)
    for teacher in args.teacher_width:
        if len(args.teacher_width) > 1:
            print(f"teacher {teacher}:")
        print("learned widths: " + " ".join(str(w) for w in results[teacher]))


if __name__ == "__main__":
    main()
