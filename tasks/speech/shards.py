"""Deterministic, parallel generation: a split is made in fixed-size shards, each in a
fresh worker process.

Why fresh processes: espeak-ng keeps synthesis state between calls in C statics (pitch
flutter phase, noise generator), so the same text and voice come out slightly different
depending on what was synthesised before in the process. A shard that starts in a new
process with the same seeds always makes the same audio, however many workers run and in
whatever order shards finish; the shard size is fixed, so a clip depends only on (seed,
split, index). Up to `workers()` shards run at once (default: 2, or `BENCH_DATA_WORKERS`).

Each shard's process is forked from a fork server that has imported the generators' modules
(not espeak-ng: the library is loaded on first use, so in the shard's own process): a fresh
spawned process spent ~1.5 s of its few seconds importing scipy.signal alone.
"""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor, as_completed
from typing import Any

import numpy as np
from tqdm.auto import tqdm


def workers() -> int:
    return max(1, int(os.environ.get("BENCH_DATA_WORKERS", min(2, os.cpu_count() or 1))))


def run_shards(
    fn: Callable[..., dict[str, np.ndarray]],
    n_items: int,
    shard_size: int,
    args: tuple[Any, ...],
    desc: str,
    progress: bool = True,
) -> dict[str, np.ndarray]:
    """``fn(start, stop, *args)`` for each shard in a fresh process; arrays concatenated in order.

    `fn` must be a module-level function (it is pickled by reference).
    """
    bounds = [(s, min(n_items, s + shard_size)) for s in range(0, n_items, shard_size)]
    results: list[dict[str, np.ndarray] | None] = [None] * len(bounds)
    if "forkserver" in multiprocessing.get_all_start_methods():
        ctx = multiprocessing.get_context("forkserver")
        ctx.set_forkserver_preload(["scipy.signal", fn.__module__])  # used when the server starts: the first call
    else:  # Windows: a new interpreter per shard, slower, the same data
        ctx = multiprocessing.get_context("spawn")
    with (
        ProcessPoolExecutor(
            max_workers=min(workers(), len(bounds)) or 1, mp_context=ctx, max_tasks_per_child=1
        ) as pool,
        tqdm(total=n_items, desc=desc, unit="item", disable=not progress or None, leave=False) as bar,
    ):
        futures = {pool.submit(fn, start, stop, *args): i for i, (start, stop) in enumerate(bounds)}
        for future in as_completed(futures):
            i = futures[future]
            results[i] = future.result()
            bar.update(bounds[i][1] - bounds[i][0])
    keys = results[0].keys() if results else []
    return {k: np.concatenate([r[k] for r in results]) for k in keys}
