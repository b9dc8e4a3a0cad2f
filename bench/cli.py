"""Command line: a thin shell over `bench.runner`, `bench.store` and `reports`.

Every error the user can cause ends as one line on stderr and exit code 2.
"""

from __future__ import annotations

import argparse
import os
import sys

from bench.config import SCALES, ConfigError
from bench.deploy_cli import COMMANDS as DEPLOY_COMMANDS
from bench.deploy_cli import add_parsers as add_deploy_parsers
from bench.deploy_cli import measure_phase
from bench.device import use_device
from bench.registry import UnknownNameError
from bench.store import DEFAULT_STORE, StoreError
from bench.sweep import SweepError
from bench.targets import DEFAULT_TARGETS


class _Formatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    pass


def _add_store(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--store",
        default=DEFAULT_STORE,
        metavar="PATH_OR_URL",
        help="result store: an SQLite file path or any SQLAlchemy URL (env BENCH_STORE sets the default)",
    )


def _add_settings(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--set",
        dest="settings",
        action="append",
        default=[],
        metavar="SCOPE.KEY=VALUE",
        help="override a setting, e.g. task.teacher_width=24, method.widths=hidden=16, train.steps=200; repeatable",
    )


def _add_grid(p: argparse.ArgumentParser) -> None:
    what = p.add_argument_group("what to run")
    what.add_argument(
        "--task",
        nargs="+",
        default=["default"],
        help="task names, all (every task and model family), or default (the main job's share of them)",
    )
    what.add_argument("--method", nargs="+", default=["all"], help="method names (or all)")
    what.add_argument("--seed", nargs="+", type=int, default=[0, 1, 2], help="seeds; one run per seed")
    what.add_argument(
        "--scale", choices=SCALES, default="small", help="data and training size: smoke (seconds), small, full"
    )
    what.add_argument(
        "--targets",
        nargs="+",
        type=float,
        default=None,
        metavar="RATIO",
        help="FLOP/s targets, as fractions of the dense model's, for every method that takes targets "
        f"(unset: {' '.join(map(str, DEFAULT_TARGETS))}, leaving out those under a method's floor)",
    )
    _add_settings(what)
    where = p.add_argument_group("where")
    _add_store(where)
    where.add_argument("--data-root", default=None, help="folder holding real corpora, for tasks that use them")
    where.add_argument(
        "--models-dir",
        default=None,
        help="where candidate models are saved; unset: beside an SQLite store, else bench-results/results-models (on "
        "a cluster: a shared folder)",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument(
        "--device",
        default="auto",
        metavar="auto|cpu|cuda[:N]",
        help="where training and evaluation run (auto: CUDA when available); latency is measured on the CPU",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description="Benchmark of methods that make speech models small: quality against FLOP/s.",
        formatter_class=_Formatter,
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    sub.add_parser("list", help="list the tasks and methods", formatter_class=_Formatter)

    run = sub.add_parser(
        "run",
        help="train, evaluate, measure and store candidates",
        formatter_class=_Formatter,
        epilog="Finished runs are skipped, so an interrupted command resumes where it stopped.",
    )
    _add_grid(run)
    run.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch CPU threads per run; small speech models gain little from more, and lose much when the cores are "
        "busy",
    )
    run.add_argument(
        "--jobs",
        type=int,
        default=None,
        help="runs at once, each in its own process (default: env BENCH_JOBS, else this machine's cores / --threads; "
        "1 = all in this process)",
    )

    sweep = sub.add_parser(
        "sweep",
        help="the same runs as Ray Tune trials, on a local Ray instance or a cluster",
        formatter_class=_Formatter,
        epilog="Every node must reach the store: use an SQLAlchemy URL (e.g. PostgreSQL) on a multi-node cluster.",
    )
    _add_grid(sweep)
    ray_group = sweep.add_argument_group("ray")
    ray_group.add_argument(
        "--address",
        default=None,
        help="auto, HOST:PORT or ray://HOST:PORT of a running cluster; unset: a new local instance",
    )
    ray_group.add_argument("--cpus-per-trial", type=int, default=1, help="CPUs per trial (torch threads follow)")
    ray_group.add_argument(
        "--gpus-per-trial", type=float, default=0.0, help="GPUs per trial; a fraction shares one GPU between trials"
    )
    ray_group.add_argument("--num-cpus", type=int, default=None, help="CPUs of the local instance; unset: all")

    results = sub.add_parser("results", help="print stored results", formatter_class=_Formatter)
    results.add_argument("--format", choices=("table", "json", "csv"), default="table", help="output format")
    results.add_argument("--task", default=None, help="only this task")
    results.add_argument("--method", default=None, help="only this method")
    _add_store(results)

    report = sub.add_parser(
        "report",
        help="Pareto fronts, tables, figures and the HTML leaderboard, from the store",
        formatter_class=_Formatter,
    )
    report.add_argument("--out", default=None, metavar="DIR", help="output folder; unset: report/ beside the store")
    report.add_argument("--task", nargs="+", default=None, help="only these tasks; unset: every task in the store")
    _add_store(report)

    profile = sub.add_parser("profile", help="per-layer complexity table of a task's model", formatter_class=_Formatter)
    profile.add_argument("--task", required=True, help="task name")
    profile.add_argument("--widths", default="", metavar="SLOT=N,...", help="widths to profile (default: full size)")
    profile.add_argument("--max-depth", type=int, default=3, help="module depth shown")
    _add_settings(profile)
    add_deploy_parsers(sub, _Formatter, _add_store)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return _COMMANDS[args.command](args)
    except (ConfigError, StoreError, UnknownNameError, SweepError) as err:
        print(f"bench {args.command}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(
            f"bench {args.command}: interrupted; finished runs are stored and will be skipped next time",
            file=sys.stderr,
        )
        return 130


def cmd_list(args: argparse.Namespace) -> int:
    from bench.registry import get_method_class, get_task_class, method_names, task_names

    print("tasks:")
    for name in task_names():
        print(f"  {name:<20} {get_task_class(name).description}")
    print("methods:")
    for name in method_names():
        print(f"  {name:<20} {get_method_class(name).description}")
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    import torch

    from bench.planning import plan_runs
    from bench.runner import run_all
    from bench.store import ResultStore
    from reports.tables import summary_frame

    if args.threads < 1:
        raise ConfigError(f"--threads must be >= 1, got {args.threads}")
    jobs = _jobs(args.jobs, args.threads)
    use_device(args.device)
    torch.set_num_threads(args.threads)
    specs = plan_runs(args.task, args.method, args.seed, args.scale, args.settings, args.data_root, args.targets)
    store = ResultStore(args.store, args.models_dir)
    print(f"{len(specs)} run(s), {min(jobs, len(specs))} at once -> {store.location}", file=sys.stderr)
    _say_what_default_leaves_out(args)
    outcomes = run_all(specs, store, progress=not args.quiet, jobs=jobs, threads=args.threads)
    latency_failed = measure_phase(store, {s.run_key for s in specs}, args)
    rows = [row for o in outcomes for row in store.rows(run_key=o.spec.run_key)]
    with _wide_pandas():
        print(summary_frame(rows).to_string(index=False))
        if rows:
            print(_headlines(store, None))
    counts = {s: sum(o.status == s for o in outcomes) for s in ("done", "skipped", "failed")}
    for o in outcomes:
        if o.status == "failed":
            print(f"failed: {o.spec.task}/{o.spec.method} seed {o.spec.seed}: {o.reason}", file=sys.stderr)
    print(
        f"{counts['done']} run(s) done, {counts['skipped']} already done (skipped), {counts['failed']} failed; "
        f"store: {store.location}"
    )
    try:
        print(f"leaderboard: {_write_report(store)}")
    except Exception as err:  # the runs are stored; say why the report is missing, exit non-zero
        print(f"bench run: error: report not written: {type(err).__name__}: {err}", file=sys.stderr)
        return 1
    return 1 if counts["failed"] or latency_failed else 0


def _say_what_default_leaves_out(args: argparse.Namespace) -> None:
    from bench.planning import DEFAULT_SUITE, left_out_of_default_suite

    left = left_out_of_default_suite()
    if DEFAULT_SUITE in args.task and left:
        print(
            f"the default task suite leaves out {', '.join(left)}: add them with --task all "
            "(or name a task and --set task.model=...); more seeds with --seed; each method's settings with "
            "--set METHOD.KEY=VALUE (python -m bench list shows the methods)",
            file=sys.stderr,
        )


def _jobs(given: int | None, threads: int) -> int:
    if given is None and os.environ.get("BENCH_JOBS"):
        try:
            given = int(os.environ["BENCH_JOBS"])
        except ValueError:
            raise ConfigError(
                f"BENCH_JOBS must be a whole number of runs at once, got {os.environ['BENCH_JOBS']!r}"
            ) from None
    if given is not None and given < 1:
        raise ConfigError(f"--jobs (or BENCH_JOBS) must be >= 1, got {given}")
    return given or max(1, len(os.sched_getaffinity(0)) // threads)


def _write_report(store, out: str | None = None, tasks: list[str] | None = None) -> str:
    from reports.report import build_report

    try:
        return str(build_report(store, out or store.report_dir, tasks).html_path)
    except OSError as err:
        raise ConfigError(
            f"cannot write the report to {err.filename or out or store.report_dir}: {err.strerror}; "
            "pass --out with a writable folder"
        ) from None


def cmd_report(args: argparse.Namespace) -> int:
    from bench.store import ResultStore

    if args.out and os.path.exists(args.out) and not os.path.isdir(args.out):
        raise ConfigError(f"--out {args.out} is a file; give a folder (it is created if missing)")
    store = ResultStore(args.store, read_only=True)
    print(f"leaderboard: {_write_report(store, args.out, args.task)}")
    return 0


def cmd_sweep(args: argparse.Namespace) -> int:
    from bench.planning import plan_runs
    from bench.store import ResultStore
    from bench.sweep import check_resources, sweep
    from reports.tables import summary_frame

    check_resources(args.cpus_per_trial, args.num_cpus)
    use_device(args.device)
    specs = plan_runs(args.task, args.method, args.seed, args.scale, args.settings, args.data_root, args.targets)
    store = ResultStore(args.store, args.models_dir)
    print(f"{len(specs)} run(s) as Ray Tune trials -> {store.location}", file=sys.stderr)
    counts = sweep(
        specs,
        store,
        address=args.address,
        cpus_per_trial=args.cpus_per_trial,
        num_cpus=args.num_cpus,
        progress=not args.quiet,
        gpus_per_trial=args.gpus_per_trial,
    )
    keys = {s.run_key for s in specs}
    latency_failed = measure_phase(store, keys, args)
    with _wide_pandas():
        print(summary_frame([r for r in store.rows() if r["run_key"] in keys]).to_string(index=False))
    print(
        f"{counts['done']} run(s) done, {counts['skipped']} already done (skipped), {counts['failed']} failed; "
        f"store: {store.location}"
    )
    return 1 if counts["failed"] or latency_failed else 0


def cmd_results(args: argparse.Namespace) -> int:
    from bench.store import ResultStore
    from reports.tables import rows_to_csv, rows_to_json, summary_frame

    store = ResultStore(args.store, read_only=True)
    rows = store.rows(args.task, args.method)
    if args.format == "json":
        print(rows_to_json(rows))
    elif args.format == "csv":
        sys.stdout.write(rows_to_csv(rows))
    else:
        with _wide_pandas():
            print(summary_frame(rows).to_string(index=False) if rows else "no results in the store")
            if rows:
                print(_headlines(store, args.task))
    return 0


def _headlines(store, task: str | None) -> str:
    """The per-target headline tables, as text."""
    from reports import leaderboard as lb
    from reports import targets as tg
    from reports.groups import load_frame, make_groups
    from reports.report import convergence_note, headline_title

    df = load_frame(store, [task] if task else None)
    groups = make_groups(df) if not df.empty else []
    checks = lb.convergence(groups)
    out = []
    for g in groups:
        shown, _ = tg.wide(tg.target_table(g))
        if not shown.empty:
            out += ["", headline_title(g), shown.to_string(index=False)]
            note = convergence_note(checks.get(g.key))
            out += [note] if note else []
    return "\n".join(out + (["", tg.LEGEND] if out else []))


def cmd_profile(args: argparse.Namespace) -> int:
    from bench.complexity import measure, profile_table
    from bench.config import apply_overrides, parse_set, parse_value
    from bench.registry import get_task_class

    task_cls = get_task_class(args.task)
    overrides = {k: v for scope, k, v in parse_set(args.settings) if scope in ("task", args.task)}
    task = task_cls(apply_overrides(task_cls.Config(), overrides, f"task {args.task}"))
    try:
        widths = parse_value(args.widths, dict[str, int]) if args.widths else {}
    except ValueError as err:
        raise ConfigError(f"bad --widths {args.widths!r}: expected SLOT=N,... with whole numbers N ({err})") from None
    model = task.build_model(widths)
    example = task.example_input()
    print(f"task {args.task}, widths {task.resolve_widths(widths)}, example input {tuple(example.shape)}")
    print(profile_table(model, example, max_depth=args.max_depth))
    cx = measure(model, example)
    per = 1.0 / task.example_seconds if task.example_seconds else 1.0
    print(f"{cx.flops * per:,.0f} {task.flops_unit}; {cx.params:,} parameters")
    return 0


def _wide_pandas():
    import pandas as pd

    return pd.option_context("display.width", 250, "display.max_columns", 30, "display.max_colwidth", 60)


_COMMANDS = {
    "list": cmd_list,
    "run": cmd_run,
    "sweep": cmd_sweep,
    "results": cmd_results,
    "report": cmd_report,
    "profile": cmd_profile,
}
_COMMANDS.update(DEPLOY_COMMANDS)
