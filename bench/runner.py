"""Execute runs: every candidate of every method is trained (where asked), evaluated,
measured and stored here, the same way for all methods. Runs are planned in
`bench.planning`; re-running skips runs that finished and redoes runs that crashed or failed.
"""

from __future__ import annotations

import math
import shutil
import sys
import time
from dataclasses import dataclass, field
from typing import Any

from tqdm.auto import tqdm

from bench import provenance, targets
from bench.checkpoint import save_candidate
from bench.complexity import COUNTER_DEVICE, flops_at, measure
from bench.config import ConfigError, config_hash, to_dict
from bench.context import run_context
from bench.contracts import Candidate, RunContext
from bench.latency import cpu_latency_ms
from bench.planning import RunSpec, run_knob
from bench.registry import get_method_class
from bench.shared_state import SharedState
from bench.store import CLAIM_TTL, ResultStore
from bench.training import seed_everything


@dataclass
class RunOutcome:
    spec: RunSpec
    status: str  # done | skipped (finished earlier, or by another process) | failed | busy (another process runs it)
    rows: list[dict[str, Any]] = field(default_factory=list)
    reason: str | None = None


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
    model.to(COUNTER_DEVICE)  # the counter, the saved file and latency are CPU-side
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
