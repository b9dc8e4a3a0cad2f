"""Plan and execute runs: every candidate of every method is trained (where asked),
evaluated, measured and stored here, the same way for all methods.

A run is one (task, method, resolved config, seed); its key is stable, so re-running skips
runs that finished and redoes runs that crashed or failed.
"""

from __future__ import annotations

import math
import shutil
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from functools import cached_property
from typing import Any

from tqdm.auto import tqdm

from bench import provenance, targets
from bench.checkpoint import save_candidate
from bench.complexity import flops_at, measure
from bench.config import SCALES, ConfigError, TrainRecipe, apply_overrides, config_hash, field_names, parse_set, to_dict
from bench.context import run_context
from bench.contracts import Candidate, RunContext
from bench.latency import cpu_latency_ms
from bench.registry import get_method_class, get_task_class, method_names, task_names
from bench.shared_state import SharedState
from bench.store import CLAIM_TTL, ResultStore
from bench.training import seed_everything

DEFAULT_SEEDS = (0, 1, 2)
DEFAULT_SUITE = "default"  # `--task default`: what each task puts in the main job


def left_out_of_default_suite() -> list[str]:
    """What `--task default` leaves out that `--task all` runs, e.g. ['vad (transformer)', 'antispoof']."""
    out = []
    for name in task_names():
        cls = get_task_class(name)
        if not cls.in_default_suite:
            out.append(name)
        elif cls.default_families:
            out += [f"{name} ({f})" for f in cls.model_families if f not in cls.default_families]
    return out


# The training budget every candidate gets, stored in each resolved config.
BUDGET_RULE = (
    "every candidate's lineage has train.steps optimizer steps: the dense model, a width learner's "
    "training, pruning's pre-training + pruning steps + fine-tuning, each search trial"
)


@dataclass(frozen=True)
class RunSpec:
    """Everything that defines one run; its `run_key` identifies it in the store."""

    task: str
    method: str
    seed: int
    scale: str
    task_config: Any  # the task's Config dataclass, overrides applied
    method_config: Any  # the method's Config dataclass, overrides applied (one knob value)
    recipe: TrainRecipe  # the task's recipe at this scale, overrides applied
    data_root: str | None = None  # where real corpora live (not part of the key)

    @cached_property
    def config(self) -> dict[str, Any]:
        return {
            "task": {"name": self.task, **to_dict(self.task_config)},
            "method": {"name": self.method, **to_dict(self.method_config)},
            "train": to_dict(self.recipe),
            "budget": {"train_steps": self.recipe.steps, "rule": BUDGET_RULE},
            "scale": self.scale,
        }

    @cached_property
    def config_hash(self) -> str:
        return config_hash(self.config)

    @property
    def run_key(self) -> str:
        return f"{self.task}/{self.method}/{self.config_hash}/seed{self.seed}"

    def build_task(self):
        return get_task_class(self.task)(self.task_config, scale=self.scale, data_root=self.data_root)

    def build_method(self):
        return get_method_class(self.method)(self.method_config)


@dataclass
class RunOutcome:
    spec: RunSpec
    status: str  # done | skipped (finished earlier, or by another process) | failed | busy (another process runs it)
    rows: list[dict[str, Any]] = field(default_factory=list)
    reason: str | None = None


def _expand(names: Iterable[str], valid: list[str], kind: str, in_all: list[str] | None = None) -> list[str]:
    out: list[str] = []
    for name in names:
        for part in name.split(","):
            part = part.strip()
            if part == "all":
                out.extend(valid if in_all is None else in_all)
            elif part not in valid:
                raise ConfigError(f"unknown {kind} {part!r}; choose from: {', '.join(valid)} (or all)")
            else:
                out.append(part)
    return list(dict.fromkeys(out))


def _scoped(overrides: list[tuple[str, str, str]], generic: str, name: str, config_cls: type) -> dict[str, str]:
    """Overrides aimed at `name`: its own scope always, the generic scope where the key exists."""
    keys = set(field_names(config_cls))
    chosen = {k: v for scope, k, v in overrides if scope == generic and k in keys}
    chosen.update({k: v for scope, k, v in overrides if scope == name})
    return chosen


def plan_runs(
    tasks: Iterable[str],
    methods: Iterable[str],
    seeds: Iterable[int] = DEFAULT_SEEDS,
    scale: str = "small",
    settings: list[str] | None = None,
    data_root: str | None = None,
    flop_targets: list[float] | None = None,
) -> list[RunSpec]:
    """Resolve names and `--set` strings into run specs; every setting is checked here,
    before any training, and raises `ConfigError` with a one-line message if wrong.

    `flop_targets` (fractions of the dense FLOP/s) replace the targets of every method that
    has them (`Method.target_field`) unless a `--set` names that field; None keeps the
    defaults, whose values under a method's floor are left out."""
    given = targets.check_targets(flop_targets) if flop_targets is not None else None
    if scale not in SCALES:
        raise ConfigError(f"unknown scale {scale!r}; choose from: {', '.join(SCALES)}")
    methods_given = {part.strip() for name in methods for part in name.split(",")}
    tasks = list(tasks)
    suite = [t for t in tasks if t.strip() == DEFAULT_SUITE]
    task_list = _expand(
        [t for t in tasks if t.strip() != DEFAULT_SUITE] + (["all"] if suite else []),
        task_names(),
        "task",
        [n for n in task_names() if not suite or get_task_class(n).in_default_suite],
    )
    method_list = _expand(methods, method_names(), "method", [m for m in method_names() if get_method_class(m).in_all])
    seeds = list(dict.fromkeys(int(s) for s in seeds))
    if any(s < 0 for s in seeds):
        raise ConfigError(f"seeds must be whole numbers >= 0, got {min(seeds)}")
    overrides = parse_set(settings)
    _check_scopes(overrides, task_list, method_list)

    specs: list[RunSpec] = []
    planned_once: set[tuple[str, str]] = set()
    for task_name, task_overrides in _task_variants(task_list, overrides, default_suite=bool(suite)):
        task_cls = get_task_class(task_name)
        task_config = apply_overrides(task_cls.Config(), task_overrides, f"task {task_name}")
        task = task_cls(task_config, scale=scale, data_root=data_root)
        recipe = apply_overrides(
            task.recipe(), {k: v for s, k, v in overrides if s == "train"}, f"train (task {task_name})"
        )
        floors: dict[str, float | None] = {}
        for method_name in method_list:
            method_cls = get_method_class(method_name)
            chosen = _scoped(overrides, "method", method_name, method_cls.Config)
            field_name = method_cls.target_field
            if given is not None and field_name and field_name not in chosen:
                chosen = {field_name: ",".join(map(str, given)), **chosen}
            method_config = apply_overrides(method_cls.Config(), chosen, f"method {method_name}")
            method = method_cls(method_config)
            if not method.applies_to(task):
                if "all" in methods_given:
                    continue
                raise ConfigError(f"method {method_name} does not apply to task {task_name}")
            method.validate(task)
            method.check_budget(recipe)
            if field_name:
                floors[method_name] = method.floor(task)
            if not method_cls.per_model_family:  # the same for every model family: planned with the first one only
                if (task_name, method_name) in planned_once:
                    continue
                planned_once.add((task_name, method_name))
            for one in _knob_values(method, task):
                for seed in seeds:
                    specs.append(RunSpec(task_name, method_name, seed, scale, task_config, one, recipe, data_root))
        if given is not None:
            family = task_overrides.get("model")
            targets.check_reachable(given, floors, f"task {task_name}" + (f" ({family})" if family else ""))
    return specs


def _task_variants(
    task_list: list[str], overrides: list[tuple[str, str, str]], default_suite: bool = False
) -> list[tuple[str, dict[str, str]]]:
    """(task, its overrides) per run target: every model family of a task that has several
    (in the default suite, its default families), unless `task.model` picks one."""
    out = []
    for name in task_list:
        cls = get_task_class(name)
        chosen = _scoped(overrides, "task", name, cls.Config)
        families = list(cls.default_families or cls.model_families) if default_suite else list(cls.model_families)
        families = [] if "model" in chosen else families
        out += [(name, {**chosen, "model": f}) for f in families] or [(name, chosen)]
    return out


def _check_scopes(overrides: list[tuple[str, str, str]], tasks: list[str], methods: list[str]) -> None:
    scopes = {"task": tasks, "method": methods}
    for scope, key, _ in overrides:
        if scope == "train":
            if key not in field_names(TrainRecipe):
                raise ConfigError(f"unknown setting train.{key}; valid: {', '.join(field_names(TrainRecipe))}")
        elif scope in scopes:
            owners = [
                n
                for n in scopes[scope]
                if key in field_names((get_task_class if scope == "task" else get_method_class)(n).Config)
            ]
            if not owners:
                valid = sorted(
                    {
                        f
                        for n in scopes[scope]
                        for f in field_names((get_task_class if scope == "task" else get_method_class)(n).Config)
                    }
                )
                raise ConfigError(
                    f"unknown setting {scope}.{key} for {', '.join(scopes[scope])}; valid: "
                    f"{', '.join(valid) or '(none)'}"
                )
        elif scope not in tasks and scope not in methods:
            raise ConfigError(
                f"unknown scope {scope!r} in --set {scope}.{key}; use task., method., train. or a selected task or "
                "method name"
            )


def _knob_values(method: Any, task: Any) -> list[Any]:
    """One config per knob value (a one-element list each), so each value is its own run."""
    if method.knob is None:
        return [method.config]
    return [replace(method.config, **{method.knob: [v]}) for v in method.knob_values(task)]


def run_knob(method: Any) -> Any:
    """The scalar knob value of a planned run (its config holds a one-element list), or None."""
    return getattr(method.config, method.knob)[0] if method.knob else None


def shared_state(store: ResultStore) -> SharedState:
    """The state runs into `store` share in one process (memos, the store's rows, models
    folder and study database); the runner makes one per process and hands it to each run."""
    return SharedState(store.url, store.models_dir, store.rows)


def execute(spec: RunSpec, store: ResultStore, progress: bool = True, shared: SharedState | None = None) -> RunOutcome:
    """Run one spec unless the store has it finished or another process holds its claim
    (status "busy"); store its rows and final status. `shared`: the state of this process's
    runs into `store` (a new one if None)."""
    if store.run_status(spec.run_key) == "ok":
        return RunOutcome(spec, "skipped", store.rows(run_key=spec.run_key))
    with store.claimed(spec.run_key) as ours:
        if not ours:
            holder = store.claim_holder(spec.run_key) or "another process"
            return RunOutcome(spec, "busy", reason=f"being run by {holder}")
        if store.run_status(spec.run_key) == "ok":  # finished by the claim's previous holder
            return RunOutcome(spec, "skipped", store.rows(run_key=spec.run_key))
        return _execute_claimed(spec, store, progress, shared or shared_state(store))


def _execute_claimed(spec: RunSpec, store: ResultStore, progress: bool, shared: SharedState) -> RunOutcome:
    store.start_run(spec.run_key, spec.task, spec.method, spec.config_hash, spec.seed)
    seed_everything(spec.seed)
    start = time.perf_counter()
    rows: list[dict[str, Any]] = []
    status, reason = "done", None
    try:
        task, method = spec.build_task(), spec.build_method()
        ctx = run_context(
            task,
            spec.seed,
            spec.recipe,
            shared,
            progress=progress,
            run_key=spec.run_key,
            config=spec.config,
            knob=run_knob(method),
        )
        for index, candidate in enumerate(method.candidates(ctx)):
            row = _finish_candidate(spec, store, ctx, index, candidate)
            check_converged(task, candidate.model, row["error"], candidate.label or f"candidate {index}")
            rows.append(row)
    except Exception as err:  # a failed run is stored with its reason; the others go on
        status, reason = "failed", one_line(err)
        rows = [{**_base_row(spec), "status": "failed", "reason": reason}]
        shutil.rmtree(store.models_dir / spec.run_key, ignore_errors=True)  # no model files of a failed run
    store.finish_run(spec.run_key, rows, "ok" if status == "done" else "failed", reason, time.perf_counter() - start)
    return RunOutcome(spec, status, rows, reason)


class DivergedError(RuntimeError):
    """Training diverged: non-finite weights, or an error worse than chance; the run fails."""


CHANCE_MARGIN = 1.5  # an error above 1.5 x the task's chance level means training diverged


def check_converged(task: Any, model: Any, error: float, what: str) -> None:
    """Raise `DivergedError` if `model` holds non-finite weights or `error` is worse than the
    task's chance level by the margin: only each step's loss is checked during training."""
    import torch

    for name, tensor in model.state_dict().items():
        if tensor.is_floating_point() and not torch.isfinite(tensor).all():
            raise DivergedError(f"{what}: weights {name} became non-finite (training diverged; try a lower train.lr)")
    chance = getattr(task, "chance_error", None)
    if chance is not None and error > CHANCE_MARGIN * chance:
        raise DivergedError(
            f"{what}: {task.metric} {error:.4g} is worse than chance ({chance:g}) by more than "
            f"{CHANCE_MARGIN:g}x (training diverged; try a lower train.lr)"
        )


def _finish_candidate(
    spec: RunSpec, store: ResultStore, ctx: RunContext, index: int, cand: Candidate
) -> dict[str, Any]:
    task, model, info = ctx.task, cand.model, dict(cand.info)
    train_seconds, train_steps = cand.train_seconds, cand.train_steps
    if cand.needs_training:
        report = ctx.train(model, desc=f"{spec.task}/{spec.method} {cand.label}".strip())
        train_seconds += report.seconds
        train_steps += report.steps
        info.update(final_train_loss=report.final_loss, loss_curve=report.loss_curve)
    model.to(ctx.device).eval()
    evaluation = task.evaluate(model)
    model.cpu()  # the counter, the saved file and latency are CPU-side
    if not math.isfinite(evaluation.error):
        raise FloatingPointError(f"evaluation of candidate {cand.label or index} gave error {evaluation.error}")
    example = task.example_input()
    cx = measure(model, example)
    per = 1.0 / task.example_seconds if task.example_seconds else 1.0
    achieved = getattr(cx, cand.target_flops) / flops_at(task, {}, ctx.shared)
    relpath = None  # a reference (an outside model) has no file the task's code could rebuild
    if not info.get("reference"):
        relpath = f"{spec.run_key}/candidate{index}.pt"
        save_candidate(
            store.models_dir / relpath,
            model,
            task=spec.task,
            task_config=to_dict(spec.task_config),
            widths=cand.widths,
            meta={"method": spec.method, "label": cand.label, "seed": spec.seed, "config": spec.config},
        )
    return {
        **_base_row(spec),
        "candidate": index,
        "label": cand.label,
        "status": "ok",
        "widths": dict(cand.widths),
        "params": cx.params,
        "nonzero_params": cx.nonzero_params,
        "macs": cx.macs,
        "flops": cx.flops * per,
        "nonzero_flops": cx.nonzero_flops * per,
        "flops_unit": task.flops_unit,
        "uncounted_ops": list(cx.uncounted),
        "metric": task.metric,
        "metric_info": task.metric_info(),
        "error": evaluation.error,
        "breakdowns": evaluation.breakdowns,
        "secondary": evaluation.secondary,
        "train_seconds": train_seconds,
        "search_seconds": train_seconds + cand.search_seconds,
        "train_steps": train_steps,
        "search_steps": train_steps + cand.search_steps,
        "target_ratio": cand.target_ratio,
        "achieved_ratio": achieved,
        "target_met": targets.met(achieved, cand.target_ratio),
        # Measured after all training (bench.measure), with nothing else on the cores; a reference
        # (an outside model no candidate file rebuilds) only here.
        "latency_ms": cpu_latency_ms(model, example) if info.get("reference") else None,
        "model_path": relpath,
        "info": info,
    }


def _base_row(spec: RunSpec) -> dict[str, Any]:
    return {
        "task": spec.task,
        "method": spec.method,
        "seed": spec.seed,
        "config_hash": spec.config_hash,
        "scale": spec.scale,
        "task_config": spec.config["task"],
        "method_config": spec.config["method"],
        "config": {**spec.config, "seed": spec.seed},
        "versions": provenance.versions(),
        "git_rev": provenance.git_revision(),
        "machine": provenance.machine(),
    }


def store_failure(spec: RunSpec, store: ResultStore, reason: str) -> RunOutcome:
    """Store `spec` as failed with `reason`, for a failure outside `execute` (a dead worker)."""
    store.start_run(spec.run_key, spec.task, spec.method, spec.config_hash, spec.seed)
    store.finish_run(spec.run_key, [{**_base_row(spec), "status": "failed", "reason": reason}], "failed", reason, 0.0)
    return RunOutcome(spec, "failed", [], reason)


def one_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0] if text else ''}".rstrip(": ")


def run_all(
    specs: list[RunSpec], store: ResultStore, progress: bool = True, jobs: int = 1, threads: int = 1
) -> list[RunOutcome]:
    """Execute specs with a progress bar over runs; failures do not stop the rest.

    `jobs` > 1 runs that many specs at once, each in a worker process with `threads` torch
    threads: small models use one core badly, so runs side by side use a machine's cores far
    better than threads within a run. Every run is stored by its worker as it finishes.
    Runs that another command holds are waited for, and taken over if their holder dies.
    Runs of methods that build on the others' results (`runs_after_others`) start once all
    other runs have ended.
    """
    later = [s for s in specs if get_method_class(s.method).runs_after_others]
    if later and len(later) < len(specs):
        first = [s for s in specs if not get_method_class(s.method).runs_after_others]
        return run_all(first, store, progress, jobs, threads) + run_all(later, store, progress, jobs, threads)
    # A bad corpus or cache is one line before any run, not a failure of each run.
    prepare_data([s for s in specs if store.run_status(s.run_key) != "ok"])
    if jobs > 1 and len(specs) > 1:
        from bench.workers import run_parallel

        return run_parallel(specs, store, progress, jobs, threads)
    outcomes: dict[int, RunOutcome] = {}
    shared = shared_state(store)  # one per process: these runs reuse each other's memos and dense models
    bar = RunProgress(len(specs), "runs", progress)
    pending = list(range(len(specs)))
    while pending:
        busy = []
        for i in pending:
            bar.running(specs[i])
            outcome = execute(specs[i], store, progress=progress, shared=shared)
            if outcome.status == "busy":
                busy.append(i)
            else:
                outcomes[i] = outcome
                bar.finished(outcome)
        pending = busy
        wait_for_others([specs[i] for i in busy])
    bar.close()
    return [outcomes[i] for i in range(len(specs))]


_LAST_WAIT: list[str] = [""]  # the last waiting message, said once, not at every poll


def wait_for_others(specs: list[RunSpec], poll: float | None = None) -> None:
    """Before another round over the runs another process holds: say so (when it changes), then sleep."""
    if specs:
        names = ", ".join(f"{s.task}/{s.method} seed {s.seed}" for s in specs[:3]) + (" ..." if len(specs) > 3 else "")
        message = f"waiting for {len(specs)} run(s) that another process is running ({names})"
        if message != _LAST_WAIT[0]:
            print(message, file=sys.stderr, flush=True)
            _LAST_WAIT[0] = message
        time.sleep(poll if poll is not None else min(5.0, CLAIM_TTL / 4))


class RunProgress:
    """A bar over runs on a terminal; elsewhere (CI logs, nohup) one line per finished run."""

    def __init__(self, total: int, desc: str, enabled: bool, done: int = 0):
        self.total, self.done = total, done
        self.lines = enabled and not sys.stderr.isatty()
        self.bar = tqdm(
            total=total,
            initial=done,
            desc=desc,
            unit="run",
            disable=not enabled or self.lines or None,
            dynamic_ncols=True,
        )

    def running(self, spec: RunSpec) -> None:
        self.bar.set_postfix_str(f"{spec.task}/{spec.method} seed {spec.seed}")

    def finished(self, outcome: RunOutcome) -> None:
        self.done += 1
        spec = outcome.spec
        self.bar.set_postfix_str(f"{spec.task}/{spec.method} seed {spec.seed}: {outcome.status}")
        self.bar.update()
        if self.lines:
            why = f": {outcome.reason}" if outcome.status == "failed" and outcome.reason else ""
            print(
                f"[{self.done}/{self.total}] {spec.task}/{spec.method} seed {spec.seed} {spec.config_hash[:8]}: "
                f"{outcome.status}{why}",
                file=sys.stderr,
                flush=True,
            )

    def close(self) -> None:
        self.bar.close()


def prepare_data(specs: list[RunSpec]) -> None:
    """Build each task's data once, here, before worker processes would race to build it."""
    seen = set()
    for spec in specs:
        key = (spec.task, config_hash(to_dict(spec.task_config)), spec.scale, str(spec.data_root))
        if key not in seen:
            seen.add(key)
            try:
                spec.build_task().prepare()
            except OSError as err:  # e.g. an unwritable cache: one line, before any run starts
                where = f" {err.filename}" if err.filename else ""
                raise ConfigError(
                    f"cannot build the data of task {spec.task}:{where} {err.strerror or err}; "
                    "set BENCH_CACHE to a writable folder"
                ) from None


def start_order(spec: RunSpec) -> int:
    """Sort key of the parallel queue: searches first (the longest runs: one started last
    leaves a core idle at the end), the rest in plan order."""
    return 0 if get_method_class(spec.method).runs_long else 1
