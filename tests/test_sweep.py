"""Ray Tune sweeps write the same rows as serial runs; the store takes concurrent writers."""

import multiprocessing as mp
import time

import pytest
import torch

from bench.planning import plan_runs
from bench.runner import run_all
from bench.store import ResultStore
from bench.sweep import SweepError, check_address, sweep

GRID = dict(
    tasks=["synthetic"],
    methods=["baseline"],
    seeds=[0, 1, 2, 3],
    scale="smoke",
    settings=["method.widths=hidden=8", "train.steps=150"],
)


@pytest.fixture
def ray_local():
    import ray

    yield
    ray.shutdown()


def _metrics(store):
    return sorted(
        (r["run_key"], r["seed"], r["widths"]["hidden"], r["flops"], r["params"], round(r["error"], 6))
        for r in store.rows()
    )


def _worker_pids():
    """A Tune callback that keeps the worker process id of each trial's result."""
    from ray.tune import Callback

    class WorkerPids(Callback):
        def __init__(self):
            self.pids = []

        def on_trial_result(self, iteration, trials, trial, result, **info):
            self.pids.append(result["pid"])

    return WorkerPids()


def test_a_sweep_on_local_ray_stores_what_a_serial_run_stores(tmp_path, ray_local):
    specs = plan_runs(GRID["tasks"], GRID["methods"], GRID["seeds"], GRID["scale"], GRID["settings"])
    swept = ResultStore(str(tmp_path / "swept.db"))
    workers = _worker_pids()
    counts = sweep(specs, swept, num_cpus=2, cpus_per_trial=1, progress=False, callbacks=[workers])
    assert counts == {"done": 4, "skipped": 0, "failed": 0}
    assert len(workers.pids) == 4 and len(set(workers.pids)) <= 2  # trials reuse the 2 worker processes

    serial = ResultStore(str(tmp_path / "serial.db"))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # trials ran with one thread each: same arithmetic
    try:
        run_all(specs, serial, progress=False)
    finally:
        torch.set_num_threads(threads)
    assert len(swept.rows()) == 4
    assert _metrics(swept) == _metrics(serial)
    assert all((swept.models_dir / r["model_path"]).exists() for r in swept.rows())

    # A restarted sweep submits nothing that is finished.
    assert sweep(specs, swept, num_cpus=2, progress=False) == {"done": 0, "skipped": 4, "failed": 0}


def _writer(path: str, worker: int, runs: int) -> None:
    store = ResultStore(path)
    for i in range(runs):
        key = f"w{worker}/r{i}"
        store.start_run(key, "t", "m", "h", i)
        store.finish_run(
            key,
            [
                {"task": "t", "method": "m", "seed": i, "config_hash": "h", "status": "ok", "candidate": c}
                for c in range(2)
            ],
            "ok",
            None,
            0.0,
        )


def test_concurrent_writers_to_one_sqlite_store_lose_no_row(tmp_path):
    path = str(tmp_path / "shared.db")
    ctx = mp.get_context("spawn")
    workers = [ctx.Process(target=_writer, args=(path, w, 15)) for w in range(4)]
    for p in workers:
        p.start()
    for p in workers:
        p.join(120)
        assert p.exitcode == 0
    store = ResultStore(path)
    assert len(store.rows()) == 4 * 15 * 2
    assert len({r["run_key"] for r in store.rows()}) == 60


@pytest.mark.parametrize(
    "address,message",
    [
        ("127.0.0.1:1", "cannot reach a Ray cluster at 127.0.0.1:1"),
        ("ray://127.0.0.1:1", "cannot reach a Ray cluster"),
        ("nonsense", "bad --address 'nonsense'"),
        ("host:port", "bad --address"),
    ],
)
def test_bad_or_unreachable_addresses_fail_within_seconds(address, message):
    start = time.perf_counter()
    with pytest.raises(SweepError, match=message):
        check_address(address)
    assert time.perf_counter() - start < 5


def test_sweep_command_reports_an_unreachable_cluster_in_one_line(tmp_path, capsys):
    from bench.cli import main

    assert (
        main(
            [
                "sweep",
                "--task",
                "synthetic",
                "--method",
                "baseline",
                "--scale",
                "smoke",
                "--address",
                "127.0.0.1:1",
                "--store",
                str(tmp_path / "r.db"),
            ]
        )
        == 2
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("bench sweep: error: cannot reach a Ray cluster")
