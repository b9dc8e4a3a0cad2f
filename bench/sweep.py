"""Ray Tune sweeps: the grid of runs as Ray Tune trials on a local instance or a cluster.

Each trial executes one `RunSpec` with `bench.runner.execute`, the same code path as
`bench run`, and writes the same rows to the same store, so a sweep and a serial run of
one grid give the same results. Runs already finished in the store are not submitted, so a
restarted sweep only does what is left; that makes `Tuner.restore` unnecessary here (a
trial is idempotent by its run key), and a trial killed with its node is simply redone.

A run of a search method (one whose class sets `search`) is not one trial: its study's
trials become Tune trials driven by Ray Tune's `OptunaSearch` on the method's own study
(same database, same name, same sampler and search space), so one search spreads over the
cluster. Each trial runs the method's one objective (`run_search_trial`) and the method
records the result on its study's trial (`record_search_trial`); then `execute` collects
the candidates as in a serial run (every trial complete: nothing is trained). A restarted
sweep runs only the trials still missing in the study.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Any

from bench.context import run_context
from bench.planning import RunSpec
from bench.registry import get_method_class
from bench.runner import execute, one_line, store_failure, wait_for_others
from bench.shared_state import SharedState
from bench.store import CLAIM_TTL, ResultStore


class SweepError(RuntimeError):
    """Ray cannot be reached or used; the message is one line."""


def check_address(address: str | None, timeout: float = 3.0) -> None:
    """Fail fast (seconds, not Ray's minutes of retries) on a malformed or unreachable address."""
    if address in (None, "auto", "local"):
        return
    target = address.removeprefix("ray://")
    host, sep, port = target.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise SweepError(f"bad --address {address!r}: expected auto, HOST:PORT or ray://HOST:PORT")
    try:
        socket.create_connection((host, int(port)), timeout=timeout).close()
    except OSError as err:
        reason = err.strerror or type(err).__name__
        raise SweepError(
            f"cannot reach a Ray cluster at {address}: {reason}; is `ray start --head` running there?"
        ) from None


def check_resources(cpus_per_trial: int, num_cpus: int | None) -> None:
    if cpus_per_trial < 1:
        raise SweepError(f"--cpus-per-trial must be >= 1, got {cpus_per_trial}")
    if num_cpus is not None and num_cpus < 1:
        raise SweepError(f"--num-cpus must be >= 1 (or unset: all), got {num_cpus}")


def connect(address: str | None, num_cpus: int | None = None) -> None:
    """Start a local Ray instance (address None) or join the cluster at `address`."""
    import ray

    check_address(address)
    if ray.is_initialized():
        return
    kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False, "logging_level": "error"}
    try:
        if address in (None, "local"):  # "local": a new instance, never a cluster already running on this machine
            ray.init(address="local", num_cpus=num_cpus or os.cpu_count(), **kwargs)
        else:
            ray.init(address=address, **kwargs)
    except (ConnectionError, RuntimeError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise SweepError(f"cannot connect to Ray at {address or 'a new local instance'}: {first}") from None


def _trial(config: dict, specs: list[RunSpec], store_url: str, models_dir: str, threads: int) -> None:
    """One Ray Tune trial: one run, written to the shared store."""
    import torch
    from ray import tune

    torch.set_num_threads(threads)  # torch threads follow the trial's CPUs
    spec = specs[config["index"]]
    outcome = execute(spec, ResultStore(store_url, models_dir), progress=False)
    tune.report({"status": outcome.status, "candidates": len(outcome.rows), "reason": outcome.reason or ""})


TRIAL_KEY = "search_trial"  # the study's trial number, in each Tune trial's config


def is_search(spec: RunSpec) -> bool:
    return bool(getattr(get_method_class(spec.method), "search", False))


def _make_searcher(method: Any, **kwargs):
    """Ray Tune's OptunaSearch, telling each study trial its number and letting the method
    record each finished trial's result on it."""
    from ray.tune.search.optuna import OptunaSearch as TuneOptunaSearch

    class StudySearch(TuneOptunaSearch):
        def suggest(self, trial_id: str) -> dict | None:
            config = super().suggest(trial_id)
            return None if config is None else {**config, TRIAL_KEY: self._ot_trials[trial_id].number}

        def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
            if result and not error and trial_id in self._ot_trials and trial_id not in self._completed_trials:
                method.record_search_trial(self._ot_trials[trial_id], result)
            super().on_trial_complete(trial_id, result, error)

    return StudySearch(**kwargs)


_ACTOR_STATE: dict[str, SharedState] = {}  # store URL -> the state of this (reused) Ray worker's runs


def _search_context(spec: RunSpec, store_url: str, models_dir: str):
    """The run's context in a Ray worker: the task and its data are built once per worker
    process and search, as the serial method builds them once for all its trials (each
    trial seeds itself, so results do not change)."""
    if store_url not in _ACTOR_STATE:
        _ACTOR_STATE.clear()
        _ACTOR_STATE[store_url] = SharedState(store_url, models_dir)
    shared = _ACTOR_STATE[store_url]
    task = shared.memo("search_task", spec.run_key, spec.build_task, keep=1)  # one task's data in memory
    return run_context(task, spec.seed, spec.recipe, shared, progress=False, run_key=spec.run_key, config=spec.config)


def _search_trial(config: dict, spec: RunSpec, store_url: str, models_dir: str, threads: int) -> None:
    """One Tune trial of a search: the method's objective at the widths Optuna proposed."""
    import torch
    from ray import tune

    from bench.training import seed_everything

    torch.set_num_threads(threads)
    seed_everything(spec.seed)  # as `execute` seeds a serial run
    ctx = _search_context(spec, store_url, models_dir)
    method = spec.build_method()
    study = method.search_study(ctx)
    tune.report(method.run_search_trial(ctx, study, int(config[TRIAL_KEY]), config))


def _search(
    spec: RunSpec,
    store_url: str,
    models_dir: str,
    ray_dir: Path,
    cpus_per_trial: int,
    progress: bool,
    name: str,
    callbacks: list | None = None,
    resources: dict | None = None,
) -> int:
    """Run the trials still missing in the study of search run `spec` as Tune trials; returns how many."""
    from ray import tune

    method = spec.build_method()
    ctx = run_context(
        spec.build_task(),
        spec.seed,
        spec.recipe,
        SharedState(store_url, models_dir),
        progress=False,
        run_key=spec.run_key,
        config=spec.config,
    )
    study = method.search_study(ctx)
    missing = method.trials_missing(study)
    if missing <= 0:
        return 0
    method.prepare_search(ctx, study)
    searcher = _make_searcher(
        method,
        space=method.search_space(ctx.task),
        metric=[name for name, _ in method.search_objectives],
        mode=[mode for _, mode in method.search_objectives],
        sampler=study.sampler,
        storage=method.search_storage(ctx),
        study_name=study.study_name,
    )
    trainable = tune.with_resources(
        tune.with_parameters(
            _search_trial,
            spec=spec,
            store_url=store_url,
            models_dir=models_dir,
            threads=cpus_per_trial,
        ),
        resources or {"cpu": cpus_per_trial},
    )
    tuner = tune.Tuner(
        trainable,
        tune_config=tune.TuneConfig(search_alg=searcher, num_samples=missing, reuse_actors=True),
        run_config=tune.RunConfig(
            name=f"{name}-{spec.method}-{spec.config_hash[:12]}-seed{spec.seed}",
            storage_path=str(ray_dir),
            verbose=1 if progress else 0,
            callbacks=list(callbacks or []),
        ),
    )
    tuner.fit()  # a failed trial is told as failed; `execute` then runs what is still missing itself
    return missing


def sweep(
    specs: list[RunSpec],
    store: ResultStore,
    address: str | None = None,
    cpus_per_trial: int = 1,
    num_cpus: int | None = None,
    progress: bool = True,
    name: str = "bench-sweep",
    callbacks: list | None = None,
    gpus_per_trial: float = 0.0,
) -> dict[str, int]:
    """Run `specs` as Ray Tune trials; returns counts of done / skipped / failed runs.

    `callbacks`: Ray Tune callbacks (e.g. loggers, or trial timings as in the throughput
    benchmark), given to every Tuner of the sweep (a copy each: Tune appends its loggers)."""
    from ray import tune

    check_resources(cpus_per_trial, num_cpus)
    if gpus_per_trial < 0:
        raise SweepError(f"--gpus-per-trial must be >= 0 (a fraction shares a GPU), got {gpus_per_trial}")
    resources = {"cpu": cpus_per_trial, **({"gpu": gpus_per_trial} if gpus_per_trial else {})}
    pending = [s for s in specs if store.run_status(s.run_key) != "ok"]
    counts = {"done": 0, "skipped": len(specs) - len(pending), "failed": 0}
    if not pending:
        return counts
    connect(address, num_cpus)
    # Trials run in their own working folders, possibly on other machines: absolute paths only.
    store_url = store.url if store.sqlite_path is None else f"sqlite:///{store.sqlite_path.resolve()}"
    models_dir = str(Path(store.models_dir).resolve())
    ray_dir = (store.sqlite_path.parent if store.sqlite_path is not None else Path("bench-results")).resolve() / "ray"
    runs = [s for s in pending if not is_search(s)]
    searches = [s for s in pending if is_search(s)]
    if runs:
        trainable = tune.with_resources(
            tune.with_parameters(
                _trial, specs=runs, store_url=store_url, models_dir=models_dir, threads=cpus_per_trial
            ),
            resources,
        )
        tuner = tune.Tuner(
            trainable,
            param_space={"index": tune.grid_search(list(range(len(runs))))},
            # One worker process runs trial after trial: a new actor per trial would pay Python,
            # torch and repo imports (seconds) for each run, more than a short run itself.
            tune_config=tune.TuneConfig(reuse_actors=True),
            run_config=tune.RunConfig(
                name=name, storage_path=str(ray_dir), verbose=1 if progress else 0, callbacks=list(callbacks or [])
            ),
        )
        busy = []
        for result in tuner.fit():
            status = (result.metrics or {}).get("status")
            if status == "busy":  # another driver is running it
                busy.append(runs[result.config["index"]])
            else:
                counts[status if status in ("done", "skipped") else "failed"] += 1
        while busy:  # wait for the other driver; a run whose holder died is done here
            wait_for_others(busy)
            outcomes = [execute(spec, store, progress=False) for spec in busy]
            busy = [o.spec for o in outcomes if o.status == "busy"]
            for o in outcomes:
                if o.status != "busy":
                    counts[o.status] += 1
    for spec in searches:  # one search at a time, its trials over the whole cluster
        args = (store_url, models_dir, ray_dir, cpus_per_trial, progress, name, callbacks, resources)
        counts[_claimed_search(spec, store, *args)] += 1
    return counts


def _claimed_search(spec: RunSpec, store: ResultStore, store_url: str, *args) -> str:
    """One search under the run's claim, so two sweep drivers never run one study; returns
    the run's count (done, skipped: finished by another driver meanwhile, failed)."""
    import time

    while True:
        if store.run_status(spec.run_key) == "ok":
            return "skipped"
        with store.claimed(spec.run_key) as ours:
            if ours:
                try:
                    _search(spec, store_url, *args)
                except Exception as err:  # stored as a failed run (not trained here instead); the other runs go on
                    store_failure(spec, store, one_line(err))
                    return "failed"
                # The Pareto front, as a serial run stores it; nothing is left to train.
                outcome = execute(spec, store, progress=False)
                return "done" if outcome.status == "done" else "failed"
        time.sleep(min(5.0, CLAIM_TTL / 4))  # another driver runs this search
