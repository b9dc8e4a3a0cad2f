"""What produced a result: package versions, git revision, machine. Stored with every row."""

from __future__ import annotations

import functools
import os
import platform
import re
import subprocess
from importlib import metadata
from pathlib import Path

_PROJECT = "smallspeech-bench"
_REPO = Path(__file__).resolve().parent.parent


def _dependencies() -> list[str]:
    """The distributions the project requires (its metadata; extras such as test tools left out)."""
    try:
        requires = metadata.requires(_PROJECT) or []
    except metadata.PackageNotFoundError:
        return []
    return [re.split(r"[\s;<>=!~\[(]", r, maxsplit=1)[0] for r in requires if "extra ==" not in r]


@functools.cache
def versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for name in (_PROJECT, *_dependencies()):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


@functools.cache
def git_revision() -> str:
    """Commit of the benchmark's source, with ``+dirty`` if it has uncommitted changes."""
    try:
        rev = subprocess.run(["git", "rev-parse", "HEAD"], cwd=_REPO, capture_output=True, text=True, timeout=10)
        if rev.returncode != 0:
            return "unknown"
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=_REPO,
            capture_output=True,
            text=True,
            timeout=10,
        )
        return rev.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


@functools.cache
def machine() -> dict[str, object]:
    import torch

    return {
        "hostname": platform.node(),
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
    }
