"""Candidate models as files users can take away: weights plus what rebuilds the module.

A file holds the task's name and config, the widths and the state dict; `load_candidate`
rebuilds the plain `nn.Module` with one call, without this benchmark's store.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import torch
from torch import nn

FORMAT = "smallspeech-bench/candidate-v1"


def save_candidate(path: Path, model: nn.Module, *, task: str, task_config: dict, widths: dict[str, int], meta: dict[str, Any]) -> None:
    """Write atomically (temporary file, then rename) so a crash never leaves half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {"format": FORMAT, "task": task, "task_config": task_config, "widths": widths, "meta": meta, "state_dict": model.state_dict()}
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
    os.close(fd)
    try:
        torch.save(payload, tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def load_candidate(path: str | Path) -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild a saved candidate: ``model, info = load_candidate("....pt")``; model in eval mode."""
    from bench.registry import get_task_class

    payload = torch.load(path, map_location="cpu", weights_only=True)
    if payload.get("format") != FORMAT:
        raise ValueError(f"{path}: not a candidate file of this benchmark (format {payload.get('format')!r}, expected {FORMAT!r})")
    task_cls = get_task_class(payload["task"])
    model = task_cls(task_cls.Config(**payload["task_config"])).build_model(payload["widths"])
    model.load_state_dict(payload["state_dict"])
    model.eval()
    return model, {k: v for k, v in payload.items() if k != "state_dict"}
