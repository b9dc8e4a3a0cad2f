"""Timing a model the way it is deployed: one thread, after warm-up, median and spread of calls.

Two runtimes (PyTorch eager and ONNX Runtime) and two shapes: an offline recording, and
streaming (chunks with the state carried). Each figure is a `Timing`; `bench.measure`
stores them as records with the runtime, threads, input shape and machine.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn


@dataclass(frozen=True)
class Timing:
    """Wall time of repeated calls, in milliseconds, and the calling thread's CPU time."""

    median_ms: float
    p10_ms: float  # 10th percentile: the spread's low end
    p90_ms: float  # 90th percentile: the spread's high end
    calls: int  # timed calls (after `warmup` untimed ones)
    warmup: int
    # Median CPU time of the calling thread per call: at one thread both runtimes compute in
    # it, and time spent waiting for a core that other programs hold is not counted.
    cpu_median_ms: float


def _summary(wall_ms: list[float], cpu_ms: list[float], warmup: int) -> Timing:
    p10, p90 = np.percentile(wall_ms, [10, 90])
    return Timing(statistics.median(wall_ms), float(p10), float(p90), len(wall_ms), warmup, statistics.median(cpu_ms))


def time_calls(call: Callable[[], object], repeats: int, warmup: int) -> Timing:
    """Time `call` `repeats` times after `warmup` untimed calls."""
    for _ in range(warmup):
        call()
    wall, cpu = [], []
    for _ in range(repeats):
        start, start_cpu = time.perf_counter(), time.thread_time()
        call()
        cpu.append((time.thread_time() - start_cpu) * 1e3)
        wall.append((time.perf_counter() - start) * 1e3)
    return _summary(wall, cpu, warmup)


class one_thread:
    """Torch at `threads` threads inside the block, as it was after."""

    def __init__(self, threads: int = 1):
        self.threads = threads

    def __enter__(self):
        self.previous = torch.get_num_threads()
        torch.set_num_threads(self.threads)

    def __exit__(self, *exc):
        torch.set_num_threads(self.previous)


def ort_session(path: str, threads: int = 1):
    """An ONNX Runtime CPU session at `threads` intra-op threads, one inter-op thread, all graph optimisations."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads, opts.inter_op_num_threads = threads, 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])


def torch_offline(model: nn.Module, x: torch.Tensor, repeats: int, warmup: int, threads: int = 1) -> Timing:
    with one_thread(threads), torch.inference_mode():
        return time_calls(lambda: model(x), repeats, warmup)


def cpu_latency_ms(model: nn.Module, x: torch.Tensor, repeats: int = 30, warmup: int = 5) -> float:
    """PyTorch's median ms on `x` at one thread, in the calling process (for models no file rebuilds)."""
    was_training = model.training
    model.eval()
    try:
        return torch_offline(model, x, repeats, warmup).median_ms
    finally:
        model.train(was_training)


def ort_offline(session, x: torch.Tensor, repeats: int, warmup: int) -> Timing:
    feed = {session.get_inputs()[0].name: x.numpy()}
    return time_calls(lambda: session.run(None, feed), repeats, warmup)


def run_stream(
    step: Callable[..., Sequence],
    start_state: list,
    audio,
    chunk: int,
    lookahead: int,
    on_call: Callable[[float, float], None] | None = None,
) -> list:
    """Feed `audio` (batch, samples) through `step` in chunks, carrying the state; outputs per chunk.

    The first call takes `lookahead` samples and its outputs are dropped; the last chunk
    is zero-padded to `chunk`. `on_call(wall, cpu)` sees the seconds of every later call.
    Works for torch tensors and numpy arrays alike (`step` decides the runtime).
    """
    state = list(start_state)
    _, *state = step(audio[:, :lookahead], *state)
    outputs, rest = [], audio[:, lookahead:]
    for begin in range(0, rest.shape[1], chunk):
        piece = rest[:, begin : begin + chunk]
        if piece.shape[1] < chunk:
            pad = chunk - piece.shape[1]
            piece = (
                torch.nn.functional.pad(piece, (0, pad))
                if isinstance(piece, torch.Tensor)
                else np.pad(piece, ((0, 0), (0, pad)))
            )
        start, start_cpu = time.perf_counter(), time.thread_time()
        scores, *state = step(piece, *state)
        if on_call is not None:
            on_call(time.perf_counter() - start, time.thread_time() - start_cpu)
        outputs.append(scores)
    return outputs


def stream_timing(
    step: Callable[..., Sequence], start_state: list, audio, chunk: int, lookahead: int, warmup: int
) -> Timing:
    """Per-chunk wall time over one pass through `audio`; the first `warmup` chunks untimed."""
    times: list[tuple[float, float]] = []
    run_stream(
        step, start_state, audio, chunk, lookahead, on_call=lambda wall, cpu: times.append((wall * 1e3, cpu * 1e3))
    )
    timed = times[warmup:]
    if not timed:
        raise ValueError(f"{len(times)} chunks leave none to time after {warmup} warm-up chunks; give more audio")
    return _summary([w for w, _ in timed], [c for _, c in timed], warmup)


def torch_stream_step(streamer: nn.Module) -> Callable[..., Sequence]:
    def step(chunk, *state):
        with torch.inference_mode():
            return streamer(chunk, *state)

    return step


def ort_stream_step(session) -> Callable[..., Sequence]:
    names = [i.name for i in session.get_inputs()]

    def step(chunk, *state):
        return session.run(None, dict(zip(names, (np.asarray(chunk), *(np.asarray(s) for s in state)))))

    return step


def ort_profile(path: str, feed: dict, runs: int, threads: int = 1) -> dict[str, tuple[str, float]]:
    """Per ONNX node: (operator, median microseconds over `runs` calls) from ONNX Runtime's profiler.

    The median, not the mean: on a shared machine one preempted call adds milliseconds to
    whichever node was running, and the profiler's own overhead is per node.
    """
    import json
    import os
    import tempfile

    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads, opts.inter_op_num_threads = threads, 1
    opts.enable_profiling = True
    with tempfile.TemporaryDirectory() as tmp:
        opts.profile_file_prefix = os.path.join(tmp, "profile")
        session = ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])
        for _ in range(runs + 1):  # the first is a warm-up, dropped below
            session.run(None, feed)
        with open(session.end_profiling()) as f:
            events = json.load(f)
    times: dict[str, list[float]] = {}
    ops: dict[str, str] = {}
    for e in events:
        if e.get("cat") == "Node" and e["name"].endswith("_kernel_time"):
            name = e["name"][: -len("_kernel_time")]
            times.setdefault(name, []).append(e["dur"])
            ops[name] = e["args"].get("op_name", "?")
    return {name: (ops[name], statistics.median(t[1:] or t)) for name, t in times.items()}
