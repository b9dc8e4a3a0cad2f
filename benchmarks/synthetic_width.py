"""Does noise injection find the synthetic task's true width?

For each teacher width, trains the dense student (baseline) and the noise-injection curve
(one candidate per kappa_min) at scale `small`, then reports the knee of the curve: the
smallest learned width whose error is within 2x of the dense student's. The claim checked
(issue 3): the knee is within +-40% of the teacher's width.

    python benchmarks/synthetic_width.py --teacher 12 24 --seed 0 [--store PATH]
"""
from __future__ import annotations

import argparse
import platform
import tempfile
import time

from bench.runner import plan_runs, run_all
from bench.store import ResultStore


def knee(store: ResultStore, teacher: int, seed: int) -> tuple[int, float, list[tuple[int, float]]]:
    """(knee width, dense error, [(width, error)] of the curve) for one teacher width."""
    rows = [r for r in store.rows(task="synthetic") if r["task_config"]["teacher_width"] == teacher and r["seed"] == seed and r["status"] == "ok"]
    dense = next(r["error"] for r in rows if r["method"] == "baseline")
    curve = sorted((r["widths"]["hidden"], r["error"]) for r in rows if r["method"] == "noise_injection")
    return min(w for w, e in curve if e <= 2 * dense), dense, curve


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--teacher", type=int, nargs="+", default=[12, 24])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--scale", default="small")
    parser.add_argument("--store", default=None, help="result store (default: a temporary one)")
    args = parser.parse_args()
    store = ResultStore(args.store or tempfile.mkdtemp() + "/width.db")
    print(f"machine: {platform.processor() or platform.machine()}, scale {args.scale}, seed {args.seed}")
    for teacher in args.teacher:
        start = time.perf_counter()
        specs = plan_runs(["synthetic"], ["baseline", "noise_injection"], [args.seed], args.scale, [f"task.teacher_width={teacher}"])
        run_all(specs, store, progress=False)
        width, dense, curve = knee(store, teacher, args.seed)
        verdict = "within" if abs(width - teacher) <= 0.4 * teacher else "OUTSIDE"
        print(f"teacher {teacher}: dense NMSE {dense:.4f}; curve (width, NMSE) {[(w, round(e, 4)) for w, e in curve]}")
        print(f"  knee width {width} ({(width - teacher) / teacher:+.0%} of the teacher's, {verdict} +-40%), {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
