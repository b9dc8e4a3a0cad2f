"""Candidate models as files users can take away: weights plus what rebuilds the module.

A file holds the task's name and config, the widths and the state dict; `load_candidate`
rebuilds the plain `nn.Module` with one call, without this benchmark's store.
"""

from __future__ import annotations

import os
import socket
import tempfile
from pathlib import Path
from typing import Any

import torch
from torch import nn

FORMAT = "smallspeech-bench/candidate-v1"


def save_candidate(
    path: Path, model: nn.Module, *, task: str, task_config: dict, widths: dict[str, int], meta: dict[str, Any]
) -> None:
    """Write a candidate file (atomically, see `atomic_save`)."""
    atomic_save(
        {
            "format": FORMAT,
            "task": task,
            "task_config": task_config,
            "widths": widths,
            "meta": meta,
            "state_dict": model.state_dict(),
        },
        path,
    )


def atomic_save(payload: Any, path: Path) -> None:
    """`torch.save` to a temporary file, then rename, so a crash never leaves half a file.

    The temporary file is named after its writer (host and process id): one left by a
    writer that was killed is removed here, and the file gets the permissions the umask
    gives (mkstemp's 0600 made models unreadable in a shared folder)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_temporaries(path.parent)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.{_HOST}.{os.getpid()}.", suffix=".tmp")
    os.close(fd)
    try:
        torch.save(payload, tmp)
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


_HOST = socket.gethostname().replace(".", "-")


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _remove_stale_temporaries(folder: Path) -> None:
    """Remove temporary files of writers on this host that are no longer alive."""
    for tmp in folder.glob(f".*.{_HOST}.*.tmp"):
        pid = tmp.name.removesuffix(".tmp").split(f".{_HOST}.")[-1].split(".")[0]
        if pid.isdigit() and not _alive(int(pid)):
            tmp.unlink(missing_ok=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def load_candidate(path: str | Path) -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild a saved candidate: ``model, info = load_candidate("....pt")``; model in eval mode."""
    from bench.registry import get_task_class

    payload = torch.load(path, map_location="cpu", weights_only=True)
    if payload.get("format") != FORMAT:
        raise ValueError(
            f"{path}: not a candidate file of this benchmark (format {payload.get('format')!r}, expected {FORMAT!r})"
        )
    task_cls = get_task_class(payload["task"])
    model = task_cls(task_cls.Config(**payload["task_config"])).build_model(payload["widths"])
    model.load_state_dict(payload["state_dict"])
    model.eval()
    return model, {k: v for k, v in payload.items() if k != "state_dict"}
