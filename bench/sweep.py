"""Ray Tune sweeps: the grid of runs as Ray Tune trials on a local instance or a cluster.

Each trial executes one `RunSpec` with `bench.runner.execute`, the same code path as
`bench run`, and writes the same rows to the same store, so a sweep and a serial run of
one grid give the same results. Runs already finished in the store are not submitted, so a
restarted sweep only does what is left; that makes `Tuner.restore` unnecessary here (a
trial is idempotent by its run key), and a trial killed with its node is simply redone.
"""
from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Any

from bench.runner import RunSpec, execute
from bench.store import ResultStore


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
        raise SweepError(f"cannot reach a Ray cluster at {address}: {reason}; is `ray start --head` running there?") from None


def connect(address: str | None, num_cpus: int | None = None) -> None:
    """Start a local Ray instance (address None) or join the cluster at `address`."""
    import ray

    check_address(address)
    if ray.is_initialized():
        return
    kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False, "logging_level": "error"}
    try:
        if address in (None, "local"):
            ray.init(num_cpus=num_cpus or os.cpu_count(), **kwargs)
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


def sweep(
    specs: list[RunSpec],
    store: ResultStore,
    address: str | None = None,
    cpus_per_trial: int = 1,
    num_cpus: int | None = None,
    progress: bool = True,
    name: str = "bench-sweep",
) -> dict[str, int]:
    """Run `specs` as Ray Tune trials; returns counts of done / skipped / failed runs."""
    from ray import tune

    if cpus_per_trial < 1:
        raise SweepError(f"--cpus-per-trial must be >= 1, got {cpus_per_trial}")
    pending = [s for s in specs if store.run_status(s.run_key) != "ok"]
    counts = {"done": 0, "skipped": len(specs) - len(pending), "failed": 0}
    if not pending:
        return counts
    connect(address, num_cpus)
    # Trials run in their own working folders, possibly on other machines: absolute paths only.
    store_url = store.url if store.sqlite_path is None else f"sqlite:///{store.sqlite_path.resolve()}"
    models_dir = str(Path(store.models_dir).resolve())
    trainable = tune.with_resources(
        tune.with_parameters(_trial, specs=pending, store_url=store_url, models_dir=models_dir, threads=cpus_per_trial),
        {"cpu": cpus_per_trial},
    )
    ray_dir = (store.sqlite_path.parent if store.sqlite_path is not None else Path("bench-results")).resolve() / "ray"
    tuner = tune.Tuner(
        trainable,
        param_space={"index": tune.grid_search(list(range(len(pending))))},
        run_config=tune.RunConfig(name=name, storage_path=str(ray_dir), verbose=1 if progress else 0),
    )
    results = tuner.fit()
    for result in results:
        status = (result.metrics or {}).get("status")
        counts["done" if status == "done" else "failed"] += 1
    return counts
