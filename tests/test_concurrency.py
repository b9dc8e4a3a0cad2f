"""Concurrency and dead processes: claims in the store, dead workers, orphaned workers."""

import os
import re
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from bench.store import ResultStore

REPO = Path(__file__).resolve().parents[1]

# Methods that misbehave on purpose, registered in every process (workers included) through
# sitecustomize: `killer` kills its own process on seed 1; `sleeper` sleeps.
SITECUSTOMIZE = textwrap.dedent("""
    import os, signal, time
    from bench import registry
    from methods.base import Method
    from tasks.synthetic import SyntheticConfig

    class Killer(Method):
        description = "kills its process on seed 1"
        Config = SyntheticConfig
        def candidates(self, ctx):
            if ctx.seed == 1:
                os.kill(os.getpid(), signal.SIGKILL)
            return iter(())

    class Sleeper(Killer):
        description = "sleeps"
        def candidates(self, ctx):
            time.sleep(120)
            return iter(())

    for name, cls in (("killer", Killer), ("sleeper", Sleeper)):
        cls.name = name
        registry._METHODS[name] = cls
""")


def _bench(args, tmp_path, **kwargs):
    site = tmp_path / "site"
    site.mkdir(exist_ok=True)
    (site / "sitecustomize.py").write_text(SITECUSTOMIZE)
    env = {**os.environ, "PYTHONPATH": f"{site}{os.pathsep}{REPO}", "BENCH_JOBS": "1"}
    return subprocess.Popen(
        [sys.executable, "-m", "bench", *args],
        cwd=REPO,
        env=env,
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        **kwargs,
    )


def test_a_claim_is_held_until_its_holder_dies_or_its_heartbeat_expires(store_path):
    store = ResultStore(store_path)
    assert store.claim("k", "me:1:a") and store.claim("k", "me:1:a")  # ours, again
    assert not store.claim("k", "other:2:b")  # held, heartbeat fresh
    assert store.claim("k", "other:2:b", ttl=0.0)  # heartbeat older than the ttl: taken over
    import socket

    dead = f"{socket.gethostname()}:{2**22 + 12345}:c"  # a pid above Linux's maximum: no such process
    store.release("k", "other:2:b")
    assert store.claim("k", dead) and store.claim("k", "third:3:d")  # the holder died on this host: taken over
    store.finish_run("k", [], "ok", None, 0.0)
    assert store.claim_holder("k") is None  # a finished run's claim goes with its final status


def test_two_commands_on_one_store_never_train_a_run_twice(store_path, tmp_path):
    args = [
        "run",
        "--task",
        "synthetic",
        "--method",
        "baseline",
        "optuna",
        "--seed",
        "0",
        "--scale",
        "smoke",
        "--set",
        "optuna.trials=3",
        "--quiet",
        "--jobs",
        "1",
        "--store",
        store_path,
    ]
    first, second = _bench(args, tmp_path), _bench(args, tmp_path)
    outs = [p.communicate(timeout=600) for p in (first, second)]
    assert [p.returncode for p in (first, second)] == [0, 0], outs
    done = [int(re.search(r"(\d+) run\(s\) done, (\d+) already done", out).group(1)) for out, _ in outs]
    skipped = [int(re.search(r"(\d+) run\(s\) done, (\d+) already done", out).group(2)) for out, _ in outs]
    assert sum(done) == 2 and [d + s for d, s in zip(done, skipped)] == [2, 2], outs
    store = ResultStore(store_path)
    rows = store.rows()
    assert len({(r["run_key"], r["candidate"]) for r in rows}) == len(rows)
    import optuna

    studies = optuna.get_all_study_summaries(store.url)
    assert [s.n_trials for s in studies] == [3]  # one search, not two on one study


def test_a_dead_worker_is_retried_once_then_its_run_fails_with_the_reason(store_path, tmp_path):
    proc = _bench(
        [
            "run",
            "--task",
            "synthetic",
            "--method",
            "killer",
            "--seed",
            "0",
            "1",
            "--scale",
            "smoke",
            "--quiet",
            "--jobs",
            "2",
            "--store",
            store_path,
        ],
        tmp_path,
    )
    out, err = proc.communicate(timeout=600)
    assert proc.returncode == 1, err
    assert "1 run(s) done" in out, out  # seed 0, retried without counting if the pool broke under it
    died = r"failed: synthetic/killer seed 1: WorkerDied: its worker process died 2 times \(exit code -9"
    assert re.search(died, err), err
    assert "running it again in a new worker" in err
    store = ResultStore(store_path)
    (failed,) = store.rows()  # seed 0 finishes with no candidate: no row
    assert failed["seed"] == 1 and failed["status"] == "failed" and "died 2 times" in failed["reason"]
    assert store.run_status(failed["run_key"].replace("seed1", "seed0")) == "ok"


def test_a_run_finished_just_before_the_pool_broke_counts_as_done(store_path, monkeypatch):
    """A worker can store its run as ok and the pool break before its result comes back."""
    import concurrent.futures
    from concurrent.futures.process import BrokenProcessPool

    from bench.planning import plan_runs
    from bench.runner import RunOutcome
    from bench.workers import run_parallel

    store = ResultStore(store_path)
    specs = plan_runs(["synthetic"], ["baseline"], seeds=[0, 1], scale="smoke")
    rounds = []

    class BreaksOnce:
        def __init__(self, *args, **kwargs):
            rounds.append([])

        def submit(self, fn, spec):
            rounds[-1].append(spec.seed)
            future = concurrent.futures.Future()
            if len(rounds) == 1:  # seed 0 finishes, then the pool breaks under both runs
                if spec.seed == 0:
                    store.start_run(spec.run_key, spec.task, spec.method, spec.config_hash, spec.seed)
                    store.finish_run(spec.run_key, [], "ok", None, 1.0)
                future.set_exception(BrokenProcessPool("a worker died"))
            else:
                status = "skipped" if store.run_status(spec.run_key) == "ok" else "done"
                future.set_result(RunOutcome(spec, status, []))
            return future

        def shutdown(self, *args, **kwargs):
            pass

    monkeypatch.setattr(concurrent.futures, "ProcessPoolExecutor", BreaksOnce)
    outcomes = run_parallel(specs, store, progress=False, jobs=2, threads=1)
    assert rounds == [[0, 1], [1]]  # the finished run is not handed out again
    assert [o.status for o in outcomes] == ["done", "done"]


def _children(pid: int) -> set[int]:
    out = set()
    for task in Path(f"/proc/{pid}/task").iterdir():
        out |= {int(c) for c in (task / "children").read_text().split()}
    return out


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ")[1][0] != "Z"
    except FileNotFoundError:
        return False


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM])
def test_workers_exit_when_the_main_process_is_killed(sig, store_path, tmp_path):
    proc = _bench(
        [
            "run",
            "--task",
            "synthetic",
            "--method",
            "sleeper",
            "--seed",
            "0",
            "1",
            "--scale",
            "smoke",
            "--quiet",
            "--jobs",
            "2",
            "--store",
            store_path,
        ],
        tmp_path,
    )
    store = ResultStore(store_path)
    deadline = time.time() + 120
    while time.time() < deadline and len(store.rows()) == 0 and sum(_is_running(store, s) for s in (0, 1)) < 2:
        time.sleep(0.5)
    workers = _children(proc.pid)
    assert workers, "no worker started"
    proc.send_signal(sig)
    proc.communicate(timeout=30)
    deadline = time.time() + 15
    while time.time() < deadline and any(_alive(w) for w in workers):
        time.sleep(0.25)
    assert not any(_alive(w) for w in workers)
    assert len(store.dead_claims()) == 2  # their claims are free to take at once on this host


def _is_running(store, seed):
    import sqlalchemy as sa

    from bench.store_tables import runs

    with store.engine.connect() as conn:
        query = sa.select(sa.func.count()).where(runs.c.seed == seed, runs.c.status == "running")
        return conn.execute(query).scalar() > 0


def test_a_sweep_driver_never_runs_a_search_another_driver_holds(store_path, monkeypatch):
    import threading

    import bench.sweep as sweep_module
    from bench.planning import plan_runs

    [spec] = plan_runs(["synthetic"], ["optuna"], [0], "smoke", ["method.trials=2"])
    store = ResultStore(store_path)
    assert store.claim(spec.run_key, "elsewhere:1:x")  # another driver, alive on another host
    monkeypatch.setattr(sweep_module, "CLAIM_TTL", 0.4)  # poll every 0.1 s
    monkeypatch.setattr(sweep_module, "_search", lambda *a: pytest.fail("ran a search another driver holds"))

    def other_driver_finishes():
        time.sleep(1.0)
        store.start_run(spec.run_key, spec.task, spec.method, spec.config_hash, spec.seed)
        store.finish_run(spec.run_key, [], "ok", None, 1.0)

    thread = threading.Thread(target=other_driver_finishes)
    thread.start()
    assert sweep_module._claimed_search(spec, store, "unused", "models", None, 1, False, "n", None) == "skipped"
    thread.join()
