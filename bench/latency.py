"""Measured CPU latency of a candidate on the task's example input."""
from __future__ import annotations

import statistics
import time

import torch
from torch import nn


def cpu_latency_ms(model: nn.Module, example_input: torch.Tensor, repeats: int = 30, warmup: int = 5, threads: int = 1) -> float:
    """Median wall time of one forward pass, in milliseconds.

    One thread by default: small speech models are deployed on one core, and a single
    thread is far less noisy on a shared machine than all of them.
    """
    previous_threads = torch.get_num_threads()
    was_training = model.training
    torch.set_num_threads(threads)
    model.eval()
    try:
        with torch.inference_mode():
            for _ in range(warmup):
                model(example_input)
            times = []
            for _ in range(repeats):
                start = time.perf_counter()
                model(example_input)
                times.append(time.perf_counter() - start)
    finally:
        torch.set_num_threads(previous_threads)
        model.train(was_training)
    return statistics.median(times) * 1e3
