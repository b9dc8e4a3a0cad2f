"""The on-disk data cache: arrays built once per (generator settings, seed), reused after.

`cached_arrays(kind, settings, build)` returns the dict of numpy arrays that `build()` makes,
storing it under ``$BENCH_CACHE/<kind>/<hash>/`` (default ``~/.cache/smallspeech-bench``)
with a ``manifest.json`` holding the settings, their hash, the array shapes and the time it
took. The hash covers every setting the generator reads (and a generator version), so a
change builds a new entry and never reuses stale data. Writes are atomic: the entry is
built in a temporary folder and renamed into place, so an interrupted build leaves nothing
that looks finished.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

MANIFEST = "manifest.json"
# Entries already read in this process: a benchmark process runs many models on the same
# splits, and reading a split back from disk each run costs about half a second.
_MEMO: dict[Path, dict[str, np.ndarray]] = {}
_MEMO_SIZE = 12


def cache_root() -> Path:
    return Path(os.environ.get("BENCH_CACHE") or Path.home() / ".cache" / "smallspeech-bench")


def settings_hash(settings: dict[str, Any]) -> str:
    text = json.dumps(settings, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def entry_dir(kind: str, settings: dict[str, Any]) -> Path:
    return cache_root() / kind / settings_hash(settings)


def _load(entry: Path, settings: dict[str, Any]) -> dict[str, np.ndarray] | None:
    try:
        manifest = json.loads((entry / MANIFEST).read_text())
        if manifest.get("hash") != settings_hash(settings):
            return None
        with np.load(entry / "data.npz", allow_pickle=False) as data:
            arrays = {k: data[k] for k in data.files}
        if sorted(arrays) != sorted(manifest.get("arrays", {})):
            return None
        return arrays
    except (OSError, ValueError, KeyError):
        return None


def cached_arrays(
    kind: str, settings: dict[str, Any], build: Callable[[], dict[str, np.ndarray]]
) -> dict[str, np.ndarray]:
    """The arrays for `settings`, from the cache or built now (then stored atomically)."""
    entry = entry_dir(kind, settings)
    if entry in _MEMO and (entry / MANIFEST).exists():  # a removed or damaged entry is not trusted
        return dict(_MEMO[entry])
    if entry.exists():
        found = _load(entry, settings)
        if found is not None:
            return _remember(entry, found)
        warnings.warn(f"data cache entry {entry} is incomplete or stale; rebuilding it", stacklevel=2)
    start = time.perf_counter()
    arrays = build()
    entry.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=entry.parent, prefix=".building-"))
    try:
        np.savez(tmp / "data.npz", **arrays)
        manifest = {
            "kind": kind,
            "hash": settings_hash(settings),
            "settings": settings,
            "arrays": {k: {"shape": list(v.shape), "dtype": str(v.dtype)} for k, v in arrays.items()},
            "build_seconds": round(time.perf_counter() - start, 2),
            "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
        }
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=1, default=str))
        if entry.exists():  # stale entry, or another process finished first
            shutil.rmtree(entry, ignore_errors=True)
        try:
            os.replace(tmp, entry)
        except OSError:  # another process renamed its copy in between: keep theirs
            pass
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return _remember(entry, arrays)


def _remember(entry: Path, arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    if len(_MEMO) >= _MEMO_SIZE:
        _MEMO.pop(next(iter(_MEMO)))
    _MEMO[entry] = arrays
    return dict(arrays)
