"""Error against width of plainly trained synthetic students: where a width-learning method
can find the teacher's width. A student of each `--widths` width (no width learning, the
task's recipe) is trained on the teacher of each `--teacher-width`; one line per teacher,
`teacher T: W:NMSE ...` (test NMSE). The task options and their defaults are those of
benchmarks/synthetic_width.py, so the two describe the same task; `--in-features 16
--out-features 4` gives the task's own defaults.

    python benchmarks/synthetic_fixed_width.py --teacher-width 12 --widths 4 8 10 12 14 16 24 32 64
"""

from __future__ import annotations

import argparse
import time

import torch
from synthetic_width import add_task_options, config_from

from bench.training import train
from tasks.synthetic import SyntheticTask


def fixed_width_error(task: SyntheticTask, width: int, seed: int = 0) -> float:
    """Test NMSE of a student of `width` hidden units trained with the task's recipe."""
    torch.manual_seed(seed)
    model = task.build_model({"hidden": width})
    train(task, model, seed, task.recipe(), progress=False)
    model.eval()
    return task.evaluate(model).error


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--teacher-width", type=int, nargs="+", default=[12])
    parser.add_argument("--widths", type=int, nargs="+", default=[4, 8, 10, 12, 14, 16, 24, 32, 64])
    add_task_options(parser)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--scale", default="small")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    for teacher in args.teacher_width:
        task = SyntheticTask(config_from(args, teacher), scale=args.scale)
        start = time.perf_counter()
        errors = [fixed_width_error(task, w, args.seed) for w in args.widths]
        row = " ".join(f"{w}:{e:.4f}" for w, e in zip(args.widths, errors))
        print(f"teacher {teacher}: {row} ({time.perf_counter() - start:.0f} s)", flush=True)


if __name__ == "__main__":
    main()
