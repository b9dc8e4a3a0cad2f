"""Sweep throughput: the same grid run serially and as a Ray Tune sweep with 2 workers.

Both use one torch thread per run, so the ratio measures what running two runs at once
buys on this machine (goal, issue 7: >= 1.6x on 2 cores). The sweep's time includes
starting Ray; the time to start it is printed separately.

    python benchmarks/sweep_throughput.py [--runs 8] [--steps 1500] [--workers 2]
"""
from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time

import torch

from bench.runner import plan_runs, run_all
from bench.store import ResultStore
from bench.sweep import connect, sweep


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=8, help="runs in the grid (one seed each)")
    parser.add_argument("--steps", type=int, default=1500, help="training steps per run")
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    settings = [f"train.steps={args.steps}"]
    specs = plan_runs(["synthetic"], ["baseline"], range(args.runs), "small", settings)
    folder = tempfile.mkdtemp()

    torch.set_num_threads(1)
    start = time.perf_counter()
    run_all(specs, ResultStore(f"{folder}/serial.db"), progress=False)
    serial = time.perf_counter() - start

    start = time.perf_counter()
    connect(None, num_cpus=args.workers)
    startup = time.perf_counter() - start
    counts = sweep(specs, ResultStore(f"{folder}/swept.db"), num_cpus=args.workers, cpus_per_trial=1, progress=False)
    swept = time.perf_counter() - start
    assert counts["done"] == len(specs), counts

    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores; grid: {len(specs)} runs of {args.steps} steps (synthetic, scale small)")
    print(f"serial (1 thread): {serial:.1f} s; sweep ({args.workers} workers x 1 CPU): {swept:.1f} s, of which starting Ray {startup:.1f} s")
    print(f"throughput ratio {serial / swept:.2f}x (goal >= 1.6x); without Ray's start {serial / (swept - startup):.2f}x")


if __name__ == "__main__":
    main()
