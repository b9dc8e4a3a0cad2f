"""A real PostgreSQL server and a real two-node Ray cluster on this machine, loopback only.

A sweep over the cluster into the PostgreSQL store writes every row once; killing the
worker node mid-sweep loses no finished run, and the restarted sweep completes the rest.
The servers are started here; the tests skip, saying why, only where PostgreSQL's server
programs or its driver are not installed (.ci/run installs Debian's postgresql).
"""

import glob
import os
import shutil
import socket
import subprocess
import tempfile
import threading
import time

import pytest

from bench.planning import plan_runs
from bench.store import ResultStore
from bench.sweep import sweep


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _pg_bin() -> str | None:
    found = shutil.which("initdb")
    if found:
        return os.path.dirname(os.path.realpath(found))
    versions = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    return os.path.dirname(versions[-1]) if versions else None


@pytest.fixture(scope="module")
def postgres():
    """A PostgreSQL server on 127.0.0.1 for this module; yields its SQLAlchemy URL."""
    pytest.importorskip("psycopg", reason="the PostgreSQL driver is not installed: pip install psycopg[binary]")
    bindir = _pg_bin()
    if bindir is None:
        pytest.skip("PostgreSQL's server programs are not installed (apt-get install -y postgresql)")
    folder = tempfile.mkdtemp(prefix="bench-pg-")
    os.chmod(folder, 0o755)
    as_user: list[str] = []
    if os.geteuid() == 0:  # the server refuses to run as root: run it as Debian's postgres user
        shutil.chown(folder, "postgres")
        as_user = ["runuser", "-u", "postgres", "--"]
    port = _free_port()
    data = os.path.join(folder, "data")

    def pg(*args):
        subprocess.run([*as_user, *args], check=True, capture_output=True, text=True)

    pg(f"{bindir}/initdb", "-D", data, "-A", "trust", "-U", "bench")
    pg(
        f"{bindir}/pg_ctl",
        "-D",
        data,
        "-l",
        os.path.join(folder, "log"),
        "-w",
        "start",
        "-o",
        f"-c listen_addresses=127.0.0.1 -p {port} -k {folder}",
    )
    try:
        pg(f"{bindir}/createdb", "-h", "127.0.0.1", "-p", str(port), "-U", "bench", "bench")
        yield f"postgresql+psycopg://bench@127.0.0.1:{port}/bench"
    finally:
        pg(f"{bindir}/pg_ctl", "-D", data, "-m", "immediate", "stop")
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def cluster():
    """A Ray head and a second worker node, one CPU each, both on this machine (Ray's own
    multi-node testing tool). Ray rewrites a loopback address to the machine's own address,
    so the nodes listen there: still this machine only."""
    import ray
    from ray.cluster_utils import Cluster

    fast_failure = {"health_check_period_ms": 500, "health_check_failure_threshold": 3}
    head = {"num_cpus": 1, "include_dashboard": False, "_system_config": fast_failure}
    c = Cluster(initialize_head=True, head_node_args=head)
    worker = c.add_node(num_cpus=1, resources={"second_node": 1})
    c.wait_for_nodes(timeout=60)
    ray.init(address=c.address, log_to_driver=False, logging_level="error")
    try:
        yield c, worker
    finally:
        ray.shutdown()
        c.shutdown()


def _specs(seeds):
    # one row per run: the dense model without its convergence check
    return plan_runs(
        ["synthetic"], ["baseline"], seeds, "smoke", ["train.steps=400", "baseline.check_convergence=false"]
    )


def _rows_once(store, specs):
    rows = [r for r in store.rows() if r["run_key"] in {s.run_key for s in specs}]
    assert len({(r["run_key"], r["candidate"]) for r in rows}) == len(rows) == len(specs)
    return rows


def test_a_sweep_over_two_nodes_into_postgres_writes_every_row_once(postgres, cluster, tmp_path):
    import ray

    c, _ = cluster
    assert len([n for n in ray.nodes() if n["Alive"]]) == 2
    specs = _specs([0, 1, 2, 3])
    store = ResultStore(postgres, tmp_path / "models")
    assert sweep(specs, store, address=c.address, progress=False) == {"done": 4, "skipped": 0, "failed": 0}
    rows = _rows_once(store, specs)
    assert all(r["status"] == "ok" and (store.models_dir / r["model_path"]).exists() for r in rows)
    assert sweep(specs, store, address=c.address, progress=False) == {"done": 0, "skipped": 4, "failed": 0}


def _finished(store, keys):
    """Run key -> (row id, error) of the finished runs among `keys`."""
    return {r["run_key"]: (r["id"], r["error"]) for r in store.rows() if r["status"] == "ok" and r["run_key"] in keys}


def test_killing_the_worker_node_mid_sweep_loses_no_finished_run(postgres, cluster, tmp_path):
    c, worker = cluster
    specs = _specs([10, 11, 12, 13, 14, 15])
    store = ResultStore(postgres, tmp_path / "models")
    first: dict = {}
    thread = threading.Thread(target=lambda: first.update(sweep(specs, store, address=c.address, progress=False)))
    thread.start()
    deadline = time.time() + 300
    while time.time() < deadline and not [s for s in specs if store.run_status(s.run_key) == "ok"]:
        time.sleep(0.2)
    keys = {s.run_key for s in specs}
    finished = _finished(store, keys)
    assert finished, "no run finished"
    c.remove_node(worker, allow_graceful=False)
    thread.join(timeout=600)
    assert not thread.is_alive() and sum(first.values()) == len(specs)
    after_kill = _finished(store, keys)
    assert {k: after_kill[k] for k in finished} == finished  # no finished run lost or redone
    again = sweep(specs, store, address=c.address, progress=False)  # the restarted sweep does the rest
    assert again["failed"] == 0 and again["skipped"] >= len(finished)
    rows = _rows_once(store, specs)
    assert all(r["status"] == "ok" for r in rows)
    assert {k: v for k, v in ((r["run_key"], (r["id"], r["error"])) for r in rows) if k in finished} == finished
