"""Where training and evaluation run: `--device auto|cpu|cuda[:N]`. Latency is always measured on the CPU.

The CLI checks the choice and exports it as `BENCH_DEVICE`, so worker processes (local, or
Ray on this machine) inherit it; a run reads it through its `RunContext.device`.
"""

from __future__ import annotations

import os
import re
from typing import Any

import torch

from bench.config import ConfigError

ENV = "BENCH_DEVICE"


def resolve_device(spec: str) -> torch.device:
    """`auto` (CUDA when available, else CPU), `cpu`, `cuda` or `cuda:N`; ConfigError naming what is valid."""
    spec = spec.strip().lower()
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if spec == "cpu":
        return torch.device("cpu")
    match = re.fullmatch(r"cuda(?::(\d+))?", spec)
    if match is None:
        raise ConfigError(f"--device {spec!r} is not a device; use auto, cpu, cuda or cuda:N")
    if not torch.cuda.is_available():
        build = f"CUDA {torch.version.cuda}" if torch.version.cuda else "a CPU-only build"
        raise ConfigError(
            f"--device {spec}: CUDA is not available here (torch {torch.__version__}, {build}); "
            "use --device cpu or auto"
        )
    index = int(match.group(1) or 0)
    if index >= torch.cuda.device_count():
        raise ConfigError(
            f"--device {spec}: this machine has {torch.cuda.device_count()} CUDA device(s), numbered from 0"
        )
    return torch.device("cuda", index)


def use_device(spec: str) -> torch.device:
    """Check `spec` here and make it this process's and its workers' choice. The spec, not the
    resolved device, is passed on: with `auto`, each worker (e.g. a Ray node) picks its own."""
    device = resolve_device(spec)
    os.environ[ENV] = spec.strip().lower()
    return device


def default_device() -> torch.device:
    """The device chosen on the command line (`BENCH_DEVICE`), else the CPU."""
    return resolve_device(os.environ.get(ENV) or "cpu")


def to_device(batch: Any, device: torch.device) -> Any:
    """Tensors in a batch (nested tuples, lists, dicts) moved to `device`; anything else as it is."""
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=device.type == "cuda")
    if isinstance(batch, (tuple, list)):
        return type(batch)(to_device(b, device) for b in batch)
    if isinstance(batch, dict):
        return {k: to_device(v, device) for k, v in batch.items()}
    return batch


def model_device(model: torch.nn.Module) -> torch.device:
    """The device of a model's first parameter or buffer (CPU for a model with neither)."""
    for tensor in (*model.parameters(), *model.buffers()):
        return tensor.device
    return torch.device("cpu")
