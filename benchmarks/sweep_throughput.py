"""Sweep throughput: one grid run serially, then as a Ray Tune sweep with 2 workers
(goal: >= 1.6x on 2 cores), with the ratios measured in this one run.

Both run every run with one torch thread, and the two stores must hold the same results.
Three ratios of serial wall time to sweep wall time:
  - end to end: the sweep's time includes starting a local Ray instance (`bench sweep`
    without --address pays it; a user of a running cluster does not);
  - on a running Ray instance: the sweep only, workers' start (imports) included;
  - steady state: from the first trial's start to the last trial's end (throughput of runs
    once the workers are up).
It also prints the CPU that other processes used in each phase: on a shared machine, a ratio
is only worth reading when they left the cores a phase needs (1 for serial, 2 for the sweep).

    python benchmarks/sweep_throughput.py [--runs 16] [--steps 10000] [--workers 2] [--plain]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import multiprocessing as mp
import os
import platform
import shutil
import tempfile
import threading
import time

import ray
import torch
from ray.tune import Callback

from bench.planning import plan_runs
from bench.runner import run_all
from bench.store import ResultStore
from bench.sweep import connect, sweep

_HZ = os.sysconf("SC_CLK_TCK")


class CpuAccount:
    """CPU seconds used by the whole machine and by this process's tree, by role: the driver
    (this process), workers (Ray's trial workers, or plain worker processes) and Ray's own
    processes (GCS, raylet, agents, monitors). Sampled every `period` s, so that processes
    which exit still count (up to their last `period`)."""

    ROLES = ("driver", "workers", "ray")

    def __init__(self, period: float = 0.5):
        self.period, self.last, self.role = period, {}, {}
        self._lock, self._stop = threading.Lock(), threading.Event()
        self.sample()
        threading.Thread(target=self._loop, daemon=True).start()

    def _loop(self) -> None:
        while not self._stop.wait(self.period):
            self.sample()

    def _role(self, pid: int) -> str:
        if pid == os.getpid():
            return "driver"
        try:
            with open(f"/proc/{pid}/cmdline") as f:
                cmd = f.read()
        except OSError:
            return "ray"
        worker = any(k in cmd for k in ("default_worker.py", "setup_worker.py", "multiprocessing.spawn", "ray::"))
        return "workers" if worker and "Agent" not in cmd else "ray"

    def sample(self) -> None:
        stats = {}
        for pid in filter(str.isdigit, os.listdir("/proc")):
            try:
                with open(f"/proc/{pid}/stat") as f:
                    text = f.read()
            except OSError:
                continue
            fields = text[text.rfind(")") + 2 :].split()
            stats[int(pid)] = (int(fields[1]), (int(fields[11]) + int(fields[12])) / _HZ)  # ppid, utime + stime
        children: dict[int, list[int]] = {}
        for pid, (ppid, _) in stats.items():
            children.setdefault(ppid, []).append(pid)
        ours, todo = [], [os.getpid()]
        while todo:
            pid = todo.pop()
            ours.append(pid)
            todo += children.get(pid, [])
        with self._lock:
            for pid in ours:
                if pid not in self.role:
                    self.role[pid] = self._role(pid)
                self.last[pid] = stats[pid][1]

    def totals(self) -> tuple[float, dict[str, float]]:
        """(CPU s of all processes since boot, {role: CPU s of ours so far})."""
        self.sample()
        with open("/proc/stat") as f:
            user, nice, system, _idle, _iowait, irq, softirq = map(int, f.readline().split()[1:8])
        with self._lock:
            ours = {r: sum(c for p, c in self.last.items() if self.role[p] == r) for r in self.ROLES}
        return (user + nice + system + irq + softirq) / _HZ, ours

    def stop(self) -> None:
        self._stop.set()


class Phase:
    """Wall time of a block, our CPU seconds in it by role, and the cores that other
    processes kept busy meanwhile."""

    def __init__(self, account: CpuAccount):
        self.account = account

    def __enter__(self) -> Phase:
        self.busy0, self.ours0 = self.account.totals()
        self.start = time.perf_counter()
        return self

    def __exit__(self, *exc) -> None:
        self.seconds = time.perf_counter() - self.start
        busy, ours = self.account.totals()
        self.cpu = {r: ours[r] - self.ours0[r] for r in ours}
        self.others = max(0.0, busy - self.busy0 - sum(self.cpu.values())) / self.seconds  # cores


class TrialTimes(Callback):
    """When the driver saw each trial start and complete."""

    def __init__(self):
        self.started: list[float] = []
        self.completed: list[float] = []

    def on_trial_start(self, iteration, trials, trial, **info):
        self.started.append(time.perf_counter())

    def on_trial_complete(self, iteration, trials, trial, **info):
        self.completed.append(time.perf_counter())


def _plain_worker(specs: list, path: str, queue) -> None:
    torch.set_num_threads(1)
    start = time.perf_counter()  # system-wide clock on Linux: comparable across processes
    run_all(specs, ResultStore(path), progress=False)
    queue.put((start, time.perf_counter()))


def plain_processes(specs: list, workers: int, folder: str) -> tuple[float, float]:
    """The grid split over `workers` plain processes, no Ray: what the machine itself allows.
    Returns (wall time incl. starting the processes, first run's start to last run's end)."""
    ctx = mp.get_context("spawn")
    queue, start = ctx.Queue(), time.perf_counter()
    procs = [
        ctx.Process(target=_plain_worker, args=(specs[i::workers], f"{folder}/plain{i}.db", queue))
        for i in range(workers)
    ]
    for p in procs:
        p.start()
    spans = [queue.get() for _ in procs]
    for p in procs:
        p.join()
    return time.perf_counter() - start, max(e for _, e in spans) - min(s for s, _ in spans)


def _autogroup() -> bool:
    try:
        with open("/proc/sys/kernel/sched_autogroup_enabled") as f:
            return f.read().strip() == "1"
    except OSError:
        return False


def _results(store: ResultStore) -> list[tuple]:
    return sorted((r["run_key"], r["status"], r["flops"], r["params"], round(r["error"], 6)) for r in store.rows())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=16, help="runs in the grid (one seed each)")
    parser.add_argument("--steps", type=int, default=10000, help="training steps per run")
    parser.add_argument("--workers", type=int, default=2, help="Ray CPUs, one run on each")
    parser.add_argument(
        "--plain",
        action="store_true",
        help="also run the grid on plain processes without Ray (the machine's own limit)",
    )
    args = parser.parse_args()
    specs = plan_runs(["synthetic"], ["baseline"], range(args.runs), "small", [f"train.steps={args.steps}"])
    folder = tempfile.mkdtemp()
    account = CpuAccount()

    torch.set_num_threads(1)  # as each trial does
    serial_store, swept_store = ResultStore(f"{folder}/serial.db"), ResultStore(f"{folder}/swept.db")
    with Phase(account) as serial:
        run_all(specs, serial_store, progress=False)
    if args.plain:
        with Phase(account) as plain:
            plain_wall, plain_runs = plain_processes(specs, args.workers, folder)
    with Phase(account) as startup:
        connect(None, num_cpus=args.workers)
    times = TrialTimes()
    with Phase(account) as swept, contextlib.redirect_stdout(io.StringIO()):  # Tune prints its banner even when quiet
        counts = sweep(specs, swept_store, num_cpus=args.workers, cpus_per_trial=1, progress=False, callbacks=[times])
    account.stop()
    assert counts["done"] == len(specs), counts
    assert _results(serial_store) == _results(swept_store), "the sweep stored other results than the serial runs"
    ray.shutdown()
    shutil.rmtree(folder, ignore_errors=True)
    first, last = min(times.started), max(times.completed)
    steady = last - first

    cores = len(os.sched_getaffinity(0))
    print(f"machine: {platform.machine()}, {cores} cores ({os.cpu_count()} online); torch {torch.__version__}")
    print(
        f"grid: {len(specs)} runs (synthetic/baseline, scale small, {args.steps} steps, one torch thread each); "
        f"sweep and serial stored the same {len(specs)} results"
    )
    print(f"serial: {serial.seconds:.1f} s ({serial.seconds / len(specs):.2f} s per run)")
    print(
        f"sweep, {args.workers} workers: starting Ray {startup.seconds:.1f} s, then the sweep {swept.seconds:.1f} s = "
        f"{first - swept.start:.1f} s until the first trial ran (Tune, worker imports) + {steady:.1f} s of runs "
        f"+ {swept.start + swept.seconds - last:.1f} s to finish"
    )
    if args.plain:
        print(
            f"{args.workers} plain processes, no Ray: {plain_wall:.1f} s = {plain_wall - plain_runs:.1f} s starting "
            f"them + {plain_runs:.1f} s of runs "
            f"-> {serial.seconds / plain_wall:.2f}x, runs alone {serial.seconds / plain_runs:.2f}x (others kept "
            f"{plain.others:.2f} cores busy)"
        )
    print(
        "CPU seconds used: serial {:.1f}; sweep {:.1f} = workers {:.1f} + driver (Tune) {:.1f} + Ray's processes "
        "{:.1f} "
        "(+ {:.1f} starting Ray)".format(
            sum(serial.cpu.values()),
            sum(swept.cpu.values()),
            swept.cpu["workers"],
            swept.cpu["driver"],
            swept.cpu["ray"],
            sum(startup.cpu.values()),
        )
    )
    # A phase that keeps n cores busy is disturbed when other processes took more than the other cores.
    free, parallel = cores - 0.15, min(args.workers, cores)
    disturbed = (
        serial.others > free - 1 or swept.others > free - parallel or (args.plain and plain.others > free - parallel)
    )
    print(
        f"other processes kept {serial.others:.2f} cores busy during serial, {startup.others:.2f} during Ray's start, "
        f"{swept.others:.2f} during the sweep" + (" -- DISTURBED, rerun on a quiet machine" if disturbed else "")
    )
    if disturbed and _autogroup():
        print(
            "  (the kernel shares CPU fairly between process sessions (autogroup): while other process sessions "
            "are busy, this benchmark gets no more CPU with 2 workers than with 1)"
        )
    print(
        "throughput ratio (serial / sweep), goal >= 1.6x: end to end (incl. starting Ray) "
        f"{serial.seconds / (startup.seconds + swept.seconds):.2f}x; "
        f"on a running Ray instance {serial.seconds / swept.seconds:.2f}x; steady state {serial.seconds / steady:.2f}x"
    )


if __name__ == "__main__":
    main()
