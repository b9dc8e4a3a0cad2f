"""Latency against the FLOP/s cut, from a store measured by `bench run` / `bench latency`, and
per-layer ONNX Runtime profiles of the dense and compacted models.

    python benchmarks/latency.py --store /tmp/r.db                 # Markdown table
    python benchmarks/latency.py --store /tmp/r.db --profile 10    # plus per-layer profiles, 10 s input

Rows: per task and model family, the dense candidate (no FLOP/s target) and every other
candidate of the same seed. Speed-up = dense median / candidate median, per runtime and shape;
"ratio" = speed-up / FLOP/s cut (1 = time falls as fast as FLOP/s).
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from collections import defaultdict

import torch

from bench.store import ResultStore


def family(row: dict) -> str:
    model = (row.get("task_config") or {}).get("model")
    return f"{row['task']} {model}" if model else row["task"]


def stored_figure(row: dict, runtime: str, shape: str, seconds: float | None = None) -> dict | None:
    """The stored record of `row` for this runtime and shape (streaming: any chunk length)."""
    for r in row.get("latency") or []:
        if (
            r["runtime"] == runtime
            and r["shape"] == shape
            and (seconds is None or shape == "streaming" or r["audio_seconds"] == seconds)
        ):
            return r
    return None


def _ms(r: dict | None, key: str = "median_ms") -> str:
    if not r:
        return "-"
    spread = f" ({r['p10_ms']:.2f}-{r['p90_ms']:.2f})" if key == "median_ms" else ""
    return f"{r[key]:.2f}{spread}"


_FLOPS: dict = {}


def flops_at(store: ResultStore, row: dict, seconds: float) -> float:
    """The counter's FLOPs of the candidate on `seconds` of audio (attention grows with the square of the length)."""
    if row["id"] not in _FLOPS:
        from bench.checkpoint import load_candidate
        from bench.complexity import measure
        from bench.registry import get_task_class

        model, info = load_candidate(store.models_dir / row["model_path"])
        task_cls = get_task_class(info["task"])
        task = task_cls(task_cls.Config(**info["task_config"]))
        _FLOPS[row["id"]] = measure(model, task.latency_input(seconds)).flops
    return _FLOPS[row["id"]]


def table(store: ResultStore, rows: list[dict], seconds: float, figure=stored_figure, key: str = "median_ms") -> str:
    """Markdown table of `key` (wall `median_ms`, or the thread's `cpu_median_ms`) per candidate and its speed-ups."""
    groups = defaultdict(list)
    for row in rows:
        if row["status"] == "ok" and row.get("latency"):
            groups[(family(row), row["seed"])].append(row)
    cols = [
        ("onnxruntime", "offline", 1.0),
        ("onnxruntime", "offline", seconds),
        ("pytorch", "offline", 1.0),
        ("pytorch", "offline", seconds),
    ]
    head = (
        ["model", "candidate", "FLOP/s", "cut", f"cut at {seconds:g} s"]
        + [f"{rt} {s:g} s, ms" for rt, _, s in cols]
        + [f"{rt} {s:g} s speed-up (ratio)" for rt, _, s in cols]
        + ["ORT stream RTF", "PyTorch stream RTF"]
    )
    lines = ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    for (fam, _seed), members in sorted(groups.items()):
        dense = next((r for r in members if r["method"] == "baseline" and r["target_ratio"] is None), None)
        if dense is None:
            continue
        for row in [dense] + [r for r in members if r is not dense]:
            cut = dense["flops"] / row["flops"]
            long_cut = flops_at(store, dense, seconds) / flops_at(store, row, seconds)
            cells = [
                fam,
                f"{row['method']} {row['label'] or ''}".strip(),
                f"{row['flops'] / 1e6:.2f}M",
                f"{cut:.1f}x",
                f"{long_cut:.1f}x",
            ]
            cells += [_ms(figure(row, *c), key) for c in cols]
            for c in cols:
                a, b = figure(dense, *c), figure(row, *c)
                c_cut = cut if c[2] == 1.0 else long_cut
                cells.append(f"{a[key] / b[key]:.2f}x ({a[key] / b[key] / c_cut:.2f})" if a and b else "-")
            for rt in ("onnxruntime", "pytorch"):
                s = figure(row, rt, "streaming", None)
                cells.append(f"{s['rtf'] * s[key] / s['median_ms']:.4f}" if s else "-")  # RTF of this kind of time
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def alternating(store: ResultStore, rows: list[dict], seconds: float, rounds: int, repeats: int, chunk_ms: float):
    """Time every candidate afresh, in `rounds` rounds that visit each (candidate, runtime, shape)
    once, so load from elsewhere on the machine hits dense and compacted models alike; the
    figure is the median over rounds of each round's median. Returns a `figure` lookup."""
    import random
    import statistics

    from bench.checkpoint import load_candidate
    from bench.latency import (
        ort_offline,
        ort_session,
        ort_stream_step,
        stream_timing,
        torch_offline,
        torch_stream_step,
    )
    from bench.registry import get_task_class

    jobs = {}
    for row in rows:
        if row["status"] != "ok" or not row.get("latency"):
            continue
        base = store.models_dir / row["model_path"]
        model, info = load_candidate(base)
        task_cls = get_task_class(info["task"])
        task = task_cls(task_cls.Config(**info["task_config"]))
        session = ort_session(str(base.with_suffix(".onnx")))
        for s in [1.0, seconds] if task.example_seconds else [None]:
            x = task.latency_input(s) if s else task.example_input()
            jobs[(row["id"], "onnxruntime", "offline", s)] = lambda session=session, x=x: ort_offline(
                session, x, repeats, 2
            )
            jobs[(row["id"], "pytorch", "offline", s)] = lambda model=model, x=x: torch_offline(model, x, repeats, 2)
        streamer = task.streamer(model)
        if streamer is not None:
            chunk = round(chunk_ms * streamer.sample_rate / 1e3)
            state, rest = streamer.start(task.latency_input(seconds))
            stream_session = ort_session(str(base.with_suffix(".stream.onnx")))
            jobs[(row["id"], "onnxruntime", "streaming", None)] = (
                lambda st=stream_session, state=state, rest=rest, la=streamer.lookahead: stream_timing(
                    ort_stream_step(st), [v.numpy() for v in state], rest.numpy(), chunk, la, 2
                )
            )
            jobs[(row["id"], "pytorch", "streaming", None)] = lambda sm=streamer, state=state, rest=rest: stream_timing(
                torch_stream_step(sm), state, rest, chunk, sm.lookahead, 2
            )
    medians: dict = {key: [] for key in jobs}
    order = list(jobs)
    rng = random.Random(0)
    torch.set_num_threads(1)
    for _ in range(rounds):
        rng.shuffle(order)
        for key in order:
            timing = jobs[key]()
            medians[key].append((timing.median_ms, timing.cpu_median_ms))
    chunk_s = chunk_ms / 1e3

    def figure(row, runtime, shape, s):
        values = medians.get((row["id"], runtime, shape, s if shape == "offline" else None))
        if not values:
            return None
        wall = [w for w, _ in values]
        m = statistics.median(wall)
        return {
            "median_ms": m,
            "p10_ms": min(wall),
            "p90_ms": max(wall),
            "rtf": m / 1e3 / (s or chunk_s),
            "cpu_median_ms": statistics.median(c for _, c in values),
        }

    return figure


def profile(store: ResultStore, rows: list[dict], seconds: float, runs: int, depth: int) -> str:
    """Per-layer ONNX Runtime profile (module path prefix of each node) of each measured candidate."""
    from bench.checkpoint import load_candidate
    from bench.latency import ort_profile
    from bench.registry import get_task_class

    out = []
    for row in rows:
        if row["status"] != "ok" or not row.get("latency"):
            continue
        model, info = load_candidate(store.models_dir / row["model_path"])
        task_cls = get_task_class(info["task"])
        task = task_cls(task_cls.Config(**info["task_config"]))
        x = task.latency_input(seconds) if task.example_seconds else task.example_input()
        nodes = ort_profile(
            str((store.models_dir / row["model_path"]).with_suffix(".onnx")), {"input": x.numpy()}, runs
        )
        layers: dict[str, float] = defaultdict(float)
        ops: dict[str, set] = defaultdict(set)
        for name, (op, us) in nodes.items():
            parts = [p for p in name.split("/") if p][:-1] or ["(graph)"]
            key = "/".join(parts[:depth])
            layers[key] += us
            ops[key].add(op)
        total = sum(layers.values())
        out.append(
            f"\n#### {family(row)}, {row['method']} {row['label'] or ''}: {total / 1e3:.2f} ms in kernels, "
            f"{len(nodes)} nodes ({seconds:g} s input, per node the median of {runs} runs)\n"
        )
        out.append("| layer | ms | share | operators |\n| --- | --- | --- | --- |")
        for key, us in sorted(layers.items(), key=lambda kv: -kv[1]):
            out.append(f"| {key} | {us / 1e3:.3f} | {100 * us / total:.0f} % | {', '.join(sorted(ops[key]))} |")
        by_op: dict[str, list] = defaultdict(lambda: [0.0, 0])
        for op, us in nodes.values():
            by_op[op][0] += us
            by_op[op][1] += 1
        top = sorted(by_op.items(), key=lambda kv: -kv[1][0])[:8]
        out.append("\nBy operator: " + ", ".join(f"{op} {us / 1e3:.2f} ms ({n} nodes)" for op, (us, n) in top) + ".")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--store", required=True)
    p.add_argument("--seconds", type=float, default=10.0, help="the offline length the store was measured at")
    p.add_argument(
        "--profile", type=int, default=0, metavar="RUNS", help="also per-layer ONNX Runtime profiles over RUNS calls"
    )
    p.add_argument("--depth", type=int, default=2, help="module path depth of a profile's layers")
    p.add_argument(
        "--rounds",
        type=int,
        default=0,
        help="time afresh in this many alternating rounds (spread: min-max of the rounds' medians); "
        "0: the stored records",
    )
    p.add_argument("--repeats", type=int, default=10, help="calls per round (with --rounds)")
    p.add_argument("--chunk-ms", type=float, default=100.0, help="streaming chunk (with --rounds)")
    args = p.parse_args(argv)
    store = ResultStore(args.store)
    rows = store.rows()
    if not any(r.get("latency") for r in rows):
        print(
            f"no measured candidates in {args.store}; run `python -m bench latency --store {args.store}` first",
            file=sys.stderr,
        )
        return 2
    load = os.getloadavg()
    figure = (
        alternating(store, rows, args.seconds, args.rounds, args.repeats, args.chunk_ms)
        if args.rounds
        else stored_figure
    )
    print(table(store, rows, args.seconds, figure))
    print("\nThe same, by the calling thread's CPU time (waits for a busy core not counted):\n")
    print(table(store, rows, args.seconds, figure, key="cpu_median_ms"))
    how = f"{args.rounds} alternating rounds of {args.repeats} calls" if args.rounds else "stored records"
    print(
        f"\n{how}; load average before {load[0]:.2f}, after {os.getloadavg()[0]:.2f}; "
        f"{platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} cores; {time.strftime('%Y-%m-%d %H:%M %Z')}"
    )
    if args.profile:
        print(profile(store, rows, args.seconds, args.profile, args.depth))
    return 0


if __name__ == "__main__":
    sys.exit(main())
