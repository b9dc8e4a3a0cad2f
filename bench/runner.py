"""Plan and execute runs: every candidate of every method is trained (where asked),
evaluated, measured and stored here, the same way for all methods.

A run is one (task, method, resolved config, seed); its key is stable, so re-running skips
runs that finished and redoes runs that crashed or failed.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field, replace
from functools import cached_property
from typing import Any, Iterable

from tqdm.auto import tqdm

from bench import provenance
from bench.checkpoint import save_candidate
from bench.complexity import measure
from bench.config import SCALES, ConfigError, TrainRecipe, apply_overrides, config_hash, field_names, parse_set, to_dict
from bench.latency import cpu_latency_ms
from bench.registry import get_method_class, get_task_class, method_names, task_names
from bench.store import ResultStore
from bench.training import seed_everything
from methods.base import Candidate, RunContext

DEFAULT_SEEDS = (0, 1, 2)
TARGET_TOLERANCE = 0.1  # a FLOP/s target is met when the candidate's ratio is within 10 % of it
# The training budget every candidate gets, stored in each resolved config.
BUDGET_RULE = ("every candidate's lineage has train.steps optimizer steps: the dense model, a width learner's "
               "training, pruning's pre-training + pruning steps + fine-tuning, each search trial")


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
    status: str  # done | skipped (finished earlier) | failed
    rows: list[dict[str, Any]] = field(default_factory=list)
    reason: str | None = None


def _expand(names: Iterable[str], valid: list[str], kind: str) -> list[str]:
    out: list[str] = []
    for name in names:
        for part in name.split(","):
            part = part.strip()
            if part == "all":
                out.extend(valid)
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
) -> list[RunSpec]:
    """Resolve names and `--set` strings into run specs; every setting is checked here,
    before any training, and raises `ConfigError` with a one-line message if wrong."""
    if scale not in SCALES:
        raise ConfigError(f"unknown scale {scale!r}; choose from: {', '.join(SCALES)}")
    methods_given = {part.strip() for name in methods for part in name.split(",")}
    task_list = _expand(tasks, task_names(), "task")
    method_list = _expand(methods, method_names(), "method")
    seeds = list(dict.fromkeys(int(s) for s in seeds))
    overrides = parse_set(settings)
    _check_scopes(overrides, task_list, method_list)

    specs: list[RunSpec] = []
    for task_name, task_overrides in _task_variants(task_list, overrides):
        task_cls = get_task_class(task_name)
        task_config = apply_overrides(task_cls.Config(), task_overrides, f"task {task_name}")
        task = task_cls(task_config, scale=scale, data_root=data_root)
        recipe = apply_overrides(task.recipe(), {k: v for s, k, v in overrides if s == "train"}, f"train (task {task_name})")
        for method_name in method_list:
            method_cls = get_method_class(method_name)
            method_config = apply_overrides(method_cls.Config(), _scoped(overrides, "method", method_name, method_cls.Config), f"method {method_name}")
            method = method_cls(method_config)
            if not method.applies_to(task):
                if "all" in methods_given:
                    continue
                raise ConfigError(f"method {method_name} does not apply to task {task_name}")
            method.validate(task)
            for one in _knob_values(method, task):
                for seed in seeds:
                    specs.append(RunSpec(task_name, method_name, seed, scale, task_config, one, recipe, data_root))
    return specs


def _task_variants(task_list: list[str], overrides: list[tuple[str, str, str]]) -> list[tuple[str, dict[str, str]]]:
    """(task, its overrides) per run target: every model family of a task that has several,
    unless `task.model` picks one."""
    out = []
    for name in task_list:
        cls = get_task_class(name)
        chosen = _scoped(overrides, "task", name, cls.Config)
        families = [] if "model" in chosen else list(cls.model_families)
        out += [(name, {**chosen, "model": f}) for f in families] or [(name, chosen)]
    return out


def _check_scopes(overrides: list[tuple[str, str, str]], tasks: list[str], methods: list[str]) -> None:
    scopes = {"task": tasks, "method": methods}
    for scope, key, _ in overrides:
        if scope == "train":
            if key not in field_names(TrainRecipe):
                raise ConfigError(f"unknown setting train.{key}; valid: {', '.join(field_names(TrainRecipe))}")
        elif scope in scopes:
            owners = [n for n in scopes[scope] if key in field_names((get_task_class if scope == "task" else get_method_class)(n).Config)]
            if not owners:
                valid = sorted({f for n in scopes[scope] for f in field_names((get_task_class if scope == "task" else get_method_class)(n).Config)})
                raise ConfigError(f"unknown setting {scope}.{key} for {', '.join(scopes[scope])}; valid: {', '.join(valid) or '(none)'}")
        elif scope not in tasks and scope not in methods:
            raise ConfigError(f"unknown scope {scope!r} in --set {scope}.{key}; use task., method., train. or a selected task or method name")


def _knob_values(method: Any, task: Any) -> list[Any]:
    """One config per knob value (a one-element list each), so each value is its own run."""
    if method.knob is None:
        return [method.config]
    return [replace(method.config, **{method.knob: [v]}) for v in method.knob_values(task)]


def execute(spec: RunSpec, store: ResultStore, progress: bool = True) -> RunOutcome:
    """Run one spec unless the store has it finished; store its rows and final status."""
    if store.run_status(spec.run_key) == "ok":
        return RunOutcome(spec, "skipped", store.rows(run_key=spec.run_key))
    store.start_run(spec.run_key, spec.task, spec.method, spec.config_hash, spec.seed)
    seed_everything(spec.seed)
    start = time.perf_counter()
    rows: list[dict[str, Any]] = []
    status, reason = "done", None
    try:
        task, method = spec.build_task(), spec.build_method()
        ctx = RunContext(task=task, seed=spec.seed, recipe=spec.recipe, progress=progress, store_url=store.url, run_key=spec.run_key,
                         models_dir=store.models_dir, config=spec.config)
        for index, candidate in enumerate(method.candidates(ctx)):
            rows.append(_finish_candidate(spec, store, ctx, index, candidate))
    except Exception as err:  # a failed run is stored with its reason; the others go on
        status, reason = "failed", _one_line(err)
        rows.append({**_base_row(spec), "status": "failed", "reason": reason})
    store.finish_run(spec.run_key, rows, "ok" if status == "done" else "failed", reason, time.perf_counter() - start)
    return RunOutcome(spec, status, rows, reason)


def _finish_candidate(spec: RunSpec, store: ResultStore, ctx: RunContext, index: int, cand: Candidate) -> dict[str, Any]:
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
    achieved = getattr(cx, cand.target_flops) / _dense_flops(task)
    relpath = f"{spec.run_key}/candidate{index}.pt"
    save_candidate(store.models_dir / relpath, model, task=spec.task, task_config=to_dict(spec.task_config), widths=cand.widths,
                   meta={"method": spec.method, "label": cand.label, "seed": spec.seed, "config": spec.config})
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
        "error": evaluation.error,
        "breakdowns": evaluation.breakdowns,
        "secondary": evaluation.secondary,
        "train_seconds": train_seconds,
        "search_seconds": train_seconds + cand.search_seconds,
        "train_steps": train_steps,
        "search_steps": train_steps + cand.search_steps,
        "target_ratio": cand.target_ratio,
        "achieved_ratio": achieved,
        "target_met": None if cand.target_ratio is None else abs(achieved / cand.target_ratio - 1) <= TARGET_TOLERANCE,
        # Measured after all training (bench.measure), with nothing else on the cores; a reference
        # (an outside model no candidate file rebuilds) only here.
        "latency_ms": cpu_latency_ms(model, example) if info.get("reference") else None,
        "model_path": relpath,
        "info": info,
    }


_DENSE_FLOPS: dict[str, int] = {}


def _dense_flops(task: Any) -> int:
    """The counter's FLOPs of the task's full-width model (memoised per task config)."""
    key = config_hash({"task": task.name, **to_dict(task.config)})
    if key not in _DENSE_FLOPS:
        import torch

        with torch.random.fork_rng(devices=[]):  # leave the run's generator as if never called
            _DENSE_FLOPS[key] = measure(task.build_model(), task.example_input()).flops
    return _DENSE_FLOPS[key]


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


def _one_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0] if text else ''}".rstrip(": ")


def run_all(specs: list[RunSpec], store: ResultStore, progress: bool = True, jobs: int = 1, threads: int = 1) -> list[RunOutcome]:
    """Execute specs with a progress bar over runs; failures do not stop the rest.

    `jobs` > 1 runs that many specs at once, each in a worker process with `threads` torch
    threads: small models use one core badly, so runs side by side use a machine's cores far
    better than threads within a run. Every run is stored by its worker as it finishes.
    """
    if jobs <= 1 or len(specs) <= 1:
        outcomes = []
        bar = tqdm(specs, desc="runs", unit="run", disable=not progress or None, dynamic_ncols=True)
        for spec in bar:
            bar.set_postfix_str(f"{spec.task}/{spec.method} seed {spec.seed}")
            outcomes.append(execute(spec, store, progress=progress))
        return outcomes
    return _run_parallel(specs, store, progress, jobs, threads)


def prepare_data(specs: list[RunSpec]) -> None:
    """Build each task's data once, here, before worker processes would race to build it."""
    seen = set()
    for spec in specs:
        key = (spec.task, config_hash(to_dict(spec.task_config)), spec.scale, str(spec.data_root))
        if key not in seen:
            seen.add(key)
            spec.build_task().prepare()


def _run_parallel(specs: list[RunSpec], store: ResultStore, progress: bool, jobs: int, threads: int) -> list[RunOutcome]:
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, as_completed

    outcomes: list[RunOutcome | None] = [None] * len(specs)
    for i, spec in enumerate(specs):  # finished runs are answered here, without a worker
        if store.run_status(spec.run_key) == "ok":
            outcomes[i] = RunOutcome(spec, "skipped", store.rows(run_key=spec.run_key))
    todo = [spec for spec, o in zip(specs, outcomes) if o is None]
    prepare_data(todo)
    # spawn, not fork: forking a process that has run torch can deadlock its thread pools
    pool = ProcessPoolExecutor(min(jobs, len(todo)) or 1, mp_context=multiprocessing.get_context("spawn"),
                               initializer=_worker_init, initargs=(store.url, str(store.models_dir), threads))
    bar = tqdm(total=len(specs), initial=len(specs) - len(todo), desc=f"runs ({jobs} at once)", unit="run",
               disable=not progress or None, dynamic_ncols=True)
    try:
        tops = _top_knob_values(specs)
        order = sorted((i for i, o in enumerate(outcomes) if o is None), key=lambda i: _start_order(specs[i], tops))
        futures = {pool.submit(_worker_execute, specs[i]): i for i in order}
        for future in as_completed(futures):
            i = futures[future]
            try:
                outcomes[i] = future.result()
            except Exception as err:  # the worker died (e.g. out of memory): the run is redone on resume
                outcomes[i] = RunOutcome(specs[i], "failed", [], _one_line(err))
            bar.set_postfix_str(f"{specs[i].task}/{specs[i].method} seed {specs[i].seed}: {outcomes[i].status}")
            bar.update()
    except BaseException:
        pool.shutdown(wait=False, cancel_futures=True)
        raise
    finally:
        bar.close()
    pool.shutdown()
    return [o for o in outcomes if o is not None]


def _knob_value(spec: RunSpec) -> Any:
    return getattr(spec.method_config, get_method_class(spec.method).knob)[0]


def _top_knob_values(specs: list[RunSpec]) -> dict[tuple[str, str], Any]:
    """(task, method) -> the highest knob value planned, for methods whose runs may reuse
    a higher knob value's run."""
    tops: dict[tuple[str, str], Any] = {}
    for spec in specs:
        cls = get_method_class(spec.method)
        if cls.reuses_higher_knob and cls.knob:
            key = (spec.task, spec.method)
            tops[key] = max(tops.get(key, _knob_value(spec)), _knob_value(spec))
    return tops


def _start_order(spec: RunSpec, tops: dict[tuple[str, str], Any]) -> tuple[int, float]:
    """Sort key of the parallel queue: searches first (the longest runs: one started last
    leaves a core idle at the end); runs that may reuse a higher knob value's run last, lowest
    value last, so the run they would reuse has finished; the rest in plan order."""
    if get_method_class(spec.method).runs_long:
        return (0, 0.0)
    top = tops.get((spec.task, spec.method))
    if top is not None and _knob_value(spec) < top:
        return (2, -_knob_value(spec))
    return (1, 0.0)


_WORKER_STORE: ResultStore | None = None


def _worker_init(store_url: str, models_dir: str, threads: int) -> None:
    import torch

    global _WORKER_STORE
    torch.set_num_threads(threads)
    _WORKER_STORE = ResultStore(store_url, models_dir)


def _worker_execute(spec: RunSpec) -> RunOutcome:
    assert _WORKER_STORE is not None, "worker not initialised"
    return execute(spec, _WORKER_STORE, progress=False)  # one bar, the parent's: workers' bars would interleave
