"""Runs side by side in worker processes (`bench run --jobs N`).

Each worker executes runs with `bench.runner.execute`, claiming each in the store, so the
parent only hands out runs and counts outcomes. Two faults are handled here:

- a worker that dies (killed, out of memory) breaks the pool: a new pool takes the runs
  not finished, and a run whose worker died twice is stored as failed with the reason;
- a parent that dies (kill -9, TERM) must not leave its workers behind: each worker
  watches its parent and exits when it is gone (its claims then expire or are taken over).
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import sys
import threading
import time
from concurrent.futures import as_completed
from concurrent.futures.process import BrokenProcessPool

from bench.planning import RunSpec, start_order
from bench.runner import RunOutcome, RunProgress, execute, shared_state, store_failure, wait_for_others
from bench.shared_state import SharedState
from bench.store import ResultStore

DEATHS_ALLOWED = 1  # a run whose worker died this many times is retried once more, then stored as failed


def run_parallel(specs: list[RunSpec], store: ResultStore, progress: bool, jobs: int, threads: int) -> list[RunOutcome]:
    outcomes: dict[int, RunOutcome] = {}
    for i, spec in enumerate(specs):  # finished runs are answered here, without a worker
        if store.run_status(spec.run_key) == "ok":
            outcomes[i] = RunOutcome(spec, "skipped", store.rows(run_key=spec.run_key))
    bar = RunProgress(len(specs), f"runs ({jobs} at once)", progress, done=len(outcomes))
    pending = sorted((i for i in range(len(specs)) if i not in outcomes), key=lambda i: start_order(specs[i]))
    deaths: dict[str, int] = {}
    try:
        while pending:
            busy, broken = _round(specs, pending, store, jobs, threads, outcomes, bar)
            if broken is not None:
                _after_a_death(specs, pending, store, outcomes, deaths, broken, bar)
                pending = [i for i in pending if i not in outcomes]
                continue
            pending = busy
            wait_for_others([specs[i] for i in busy])
    finally:
        bar.close()
    return [outcomes[i] for i in range(len(specs))]


def _round(specs, pending, store, jobs, threads, outcomes, bar) -> tuple[list[int], dict[int, int] | None]:
    """Submit `pending` to a fresh pool; returns the runs another process held and, if a
    worker died, the exit codes of the workers that died (pid -> code)."""
    from concurrent.futures import ProcessPoolExecutor  # looked up per call: tests stand in a recording pool

    # spawn, not fork: forking a process that has run torch can deadlock its thread pools
    pool = ProcessPoolExecutor(
        min(jobs, len(pending)),
        mp_context=multiprocessing.get_context("spawn"),
        initializer=_worker_init,
        initargs=(store.url, str(store.models_dir), threads, os.getpid()),
    )
    busy: list[int] = []
    broken: dict[int, int] | None = None
    try:
        futures = {pool.submit(_worker_execute, specs[i]): i for i in pending}
        processes = dict(getattr(pool, "_processes", None) or {})  # pid -> process, to tell how a dead worker ended
        for future in as_completed(futures):
            i = futures[future]
            try:
                outcome = future.result()
            except BrokenProcessPool:
                broken = {}
                continue
            if outcome.status == "busy":
                busy.append(i)
            else:
                outcomes[i] = outcome
                bar.finished(outcome)
    except BaseException:
        pool.shutdown(wait=False, cancel_futures=True)
        raise
    pool.shutdown()  # after it, a dead worker's exit code is known
    if broken is not None:  # the executor ends the other workers with SIGTERM; the one that died first did not
        broken = {pid: p.exitcode for pid, p in processes.items() if p.exitcode not in (None, 0, -signal.SIGTERM)}
    return busy, broken


def _after_a_death(specs, pending, store, outcomes, deaths, culprits: dict[int, int], bar) -> None:
    """The runs of a dead worker are retried once, then stored as failed. The runs that the
    pool's other workers had started are retried without counting."""
    for i in pending:  # finished by a worker before the pool broke; its result was lost with the pool
        if i not in outcomes and store.run_status(specs[i].run_key) == "ok":
            outcomes[i] = RunOutcome(specs[i], "done", store.rows(run_key=specs[i].run_key))
            bar.finished(outcomes[i])
    running = store.dead_claims()
    for i in pending:
        spec = specs[i]
        if i in outcomes or spec.run_key not in running:
            continue
        store.release_dead(spec.run_key)
        pid = running[spec.run_key]
        if culprits and pid not in culprits:
            continue
        how = f"exit code {culprits[pid]}" if pid in culprits else "exit code unknown"
        deaths[spec.run_key] = deaths.get(spec.run_key, 0) + 1
        if deaths[spec.run_key] > DEATHS_ALLOWED:
            reason = f"WorkerDied: its worker process died {deaths[spec.run_key]} times ({how}; out of memory?)"
            outcomes[i] = store_failure(spec, store, reason)
            bar.finished(outcomes[i])
        else:
            print(
                f"a worker process died ({how}) running {spec.task}/{spec.method} seed {spec.seed}; "
                "running it again in a new worker",
                file=sys.stderr,
                flush=True,
            )


# This worker process's store and the state its runs share (the runner's, one per process).
_WORKER: tuple[ResultStore, SharedState] | None = None


def _worker_init(store_url: str, models_dir: str, threads: int, parent: int) -> None:
    import torch

    global _WORKER
    torch.set_num_threads(threads)
    store = ResultStore(store_url, models_dir)
    _WORKER = (store, shared_state(store))
    threading.Thread(target=_exit_with_parent, args=(parent,), name="parent watch", daemon=True).start()


def _exit_with_parent(parent: int) -> None:
    """A worker whose parent died would live on under init, holding memory and the store."""
    while os.getppid() == parent:
        time.sleep(1.0)
    os._exit(3)


def _worker_execute(spec: RunSpec) -> RunOutcome:
    assert _WORKER is not None, "worker not initialised"
    store, shared = _WORKER
    return execute(spec, store, progress=False, shared=shared)  # one bar, the parent's: workers' bars would interleave
