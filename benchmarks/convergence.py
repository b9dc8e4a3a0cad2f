"""Is each task's default recipe converged? Dense model at S steps against 2S steps.

A recipe of S steps counts as converged when the dense model's validation error after S
steps is within `--tolerance` (default 10 %, relative) of its error after 2S steps, each a
full training with its own cosine schedule and the same seed. Unconverged recipes favour
the methods that train longest, so the benchmark's comparisons need converged ones.

Every training is an ordinary `baseline` run through the benchmark's runner, so the runs
land in a result store (`--store`, default a temporary one). The validation error is
evaluated here from each run's saved model; the seconds are the S-step training's.

    python benchmarks/convergence.py [--task vad] [--set task.model=crnn] [--seed 0 1] [--steps 480]
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field, replace

import torch

from bench.checkpoint import load_candidate
from bench.config import ConfigError
from bench.planning import RunSpec, plan_runs
from bench.runner import run_all
from bench.store import ResultStore


def relative_gap(error_s: float, error_2s: float) -> float:
    """(error at S - error at 2S) / error at 2S; 0 when both are 0, inf when only 2S is."""
    if error_2s == 0:
        return 0.0 if error_s == 0 else float("inf")
    return (error_s - error_2s) / error_2s


def converged(error_s: float, error_2s: float, tolerance: float = 0.10) -> bool:
    """The criterion: the error at S is within `tolerance` (relative, either side) of the error at 2S."""
    return abs(relative_gap(error_s, error_2s)) <= tolerance + 1e-12  # 2.2 vs 2.0 is 10 %, not 10.000000000000009 %


@dataclass
class Result:
    """One task and model family: mean validation errors over seeds, mean S-step seconds."""

    target: str  # task, or task/family
    steps: int
    error_s: float
    error_2s: float
    seconds_s: float
    seeds: list[int]
    seed_gaps: list[float] = field(default_factory=list)  # relative gap of each seed alone
    failure: str = ""  # reason when a run failed

    def passed(self, tolerance: float) -> bool:
        return not self.failure and converged(self.error_s, self.error_2s, tolerance)


HEADER = (
    f"{'task/family':<22} {'S':>6} {'val@S':>9} {'val@2S':>9} {'gap':>8}  {'verdict':<7} {'train s@S':>9}  "
    "seeds (gap of each)"
)


def format_line(r: Result, tolerance: float) -> str:
    if r.failure:
        return f"{r.target:<22} {r.steps:>6} {'-':>9} {'-':>9} {'-':>8}  {'FAIL':<7} {'-':>9}  {r.seeds}  ({r.failure})"
    verdict = "PASS" if r.passed(tolerance) else "FAIL"
    gap = relative_gap(r.error_s, r.error_2s)
    return (
        f"{r.target:<22} {r.steps:>6} {r.error_s:>9.4g} {r.error_2s:>9.4g} {gap:>+8.1%}  "
        f"{verdict:<7} {r.seconds_s:>9.1f}  {r.seeds} ({', '.join(f'{g:+.1%}' for g in r.seed_gaps)})"
    )


def summary_line(results: list[Result], tolerance: float) -> str:
    verdicts = ", ".join(f"{r.target} {'PASS' if r.passed(tolerance) else 'FAIL'}" for r in results)
    n_pass = sum(r.passed(tolerance) for r in results)
    return f"summary ({n_pass}/{len(results)} converged within {tolerance:.0%}): {verdicts}"


def _target(spec: RunSpec) -> str:
    family = getattr(spec.task_config, "model", None)
    return f"{spec.task}/{family}" if family else spec.task


def _val_error(spec: RunSpec, store: ResultStore, task_cache: dict) -> tuple[float, float] | str:
    """(validation error, training seconds) of the spec's dense model, or the failure reason."""
    rows = store.rows(run_key=spec.run_key)
    if not rows or rows[0]["status"] != "ok":
        return (rows[0].get("reason") or "failed") if rows else "no row stored"
    row = rows[0]
    key = (spec.task, spec.config_hash)
    if key not in task_cache:
        task_cache[key] = spec.build_task()
    model, _ = load_candidate(store.models_dir / row["model_path"])
    return task_cache[key].evaluate(model, "val").error, row["train_seconds"]


def measure(
    tasks: list[str],
    seeds: list[int],
    scale: str,
    settings: list[str],
    steps: int | None,
    store: ResultStore,
    progress: bool = False,
) -> list[Result]:
    """Train every target at S and 2S steps (via the runner) and collect the validation errors."""
    # The 2S run is trained here as a run of its own; the baseline's own check would repeat it.
    settings = [*settings, "baseline.check_convergence=false"] + ([f"train.steps={steps}"] if steps else [])
    short = plan_runs(tasks, ["baseline"], seeds, scale, settings)
    long = [replace(s, recipe=replace(s.recipe, steps=2 * s.recipe.steps)) for s in short]
    run_all([x for pair in zip(short, long) for x in pair], store, progress=progress)
    task_cache: dict = {}
    grouped: dict[str, list[tuple[RunSpec, RunSpec]]] = {}
    for s, twice in zip(short, long):
        grouped.setdefault(_target(s), []).append((s, twice))
    results = []
    for target, pairs in grouped.items():
        seeds_used = [s.seed for s, _ in pairs]
        outcome = [(_val_error(s, store, task_cache), _val_error(twice, store, task_cache)) for s, twice in pairs]
        failed = [x for pair in outcome for x in pair if isinstance(x, str)]
        n = pairs[0][0].recipe.steps
        if failed:
            results.append(Result(target, n, float("nan"), float("nan"), float("nan"), seeds_used, failure=failed[0]))
            continue
        mean_s, mean_2s = statistics.mean(a[0] for a, _ in outcome), statistics.mean(b[0] for _, b in outcome)
        results.append(
            Result(
                target,
                n,
                mean_s,
                mean_2s,
                statistics.mean(a[1] for a, _ in outcome),
                seeds_used,
                [relative_gap(a[0], b[0]) for a, b in outcome],
            )
        )
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--task", nargs="+", default=["all"], help="task names or all (default: all)")
    parser.add_argument(
        "--seed", type=int, nargs="+", default=[0], help="seeds; errors and seconds are their means (default: 0)"
    )
    parser.add_argument("--scale", default="small", help="smoke | small | full (default: small)")
    parser.add_argument("--steps", type=int, default=None, help="S (default: the recipe's steps)")
    parser.add_argument(
        "--set",
        dest="settings",
        action="append",
        default=[],
        metavar="SCOPE.KEY=VALUE",
        help="setting as in `bench run`, e.g. task.model=crnn or train.lr=3e-3 (repeatable)",
    )
    parser.add_argument(
        "--tolerance", type=float, default=0.10, help="largest relative gap that passes (default: 0.10)"
    )
    parser.add_argument("--threads", type=int, default=1, help="torch threads, as a benchmark run uses (default: 1)")
    parser.add_argument("--store", default=None, help="result store (default: a new temporary one)")
    parser.add_argument("--progress", action="store_true", help="show training progress bars")
    args = parser.parse_args(argv)
    try:
        if args.steps is not None and args.steps < 1:
            raise ConfigError(f"--steps must be >= 1, got {args.steps}")
        if not 0 <= args.tolerance < 1:
            raise ConfigError(f"--tolerance must be in [0, 1), got {args.tolerance}")
        if args.threads < 1:
            raise ConfigError(f"--threads must be >= 1, got {args.threads}")
        tasks = args.task
        plan_runs(tasks, ["baseline"], args.seed, args.scale, args.settings)  # every setting checked before training
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    torch.set_num_threads(args.threads)
    store = ResultStore(args.store or tempfile.mkdtemp(prefix="convergence-") + "/results.db")
    start = time.perf_counter()
    results = measure(tasks, args.seed, args.scale, args.settings, args.steps, store, args.progress)
    print(
        f"scale {args.scale}, seeds {args.seed}, {torch.get_num_threads()} thread(s), {platform.machine()}, "
        f"store {store.location}, {time.perf_counter() - start:.0f} s in all"
    )
    print(HEADER)
    for r in results:
        print(format_line(r, args.tolerance))
    print(summary_line(results, args.tolerance))
    return 0


if __name__ == "__main__":
    sys.exit(main())
