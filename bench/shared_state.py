"""State that runs share, owned by the runner and handed to methods on `RunContext.shared`.

Runs of one process reuse work: FLOP counts of the same widths, the FLOP model fitted to
the counter, the dense model that both pruning methods start from, the data of a search's
task. A method asks this object for it (`memo`) instead of keeping a module-level cache,
and reaches the store only through it (its rows, its models folder, the database where
searches keep their studies), so a method never opens the store. The runner makes one per
process and store: a test or a new process that wants a clean slate makes a new one.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Hashable
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")

IN_MEMORY_STUDIES = "sqlite:///:memory:"


class SharedState:
    def __init__(
        self,
        store_url: str | None = None,
        models_dir: str | Path | None = None,
        rows: Callable[..., list[dict[str, Any]]] | None = None,
    ):
        self.store_url = store_url
        # The store's models folder, for files shared between runs and processes; None: no files.
        self.models_dir = Path(models_dir) if models_dir is not None else None
        self._rows = rows
        self._memos: dict[str, OrderedDict[Hashable, Any]] = {}

    def memo(self, kind: str, key: Hashable, compute: Callable[[], T], keep: int = 4096) -> T:
        """`compute()` once per (`kind`, `key`) in this state; at most `keep` values of a kind
        are held, the oldest dropped first (e.g. a few dense models, thousands of counts)."""
        table = self._memos.setdefault(kind, OrderedDict())
        if key not in table:
            value = compute()
            while len(table) >= keep:
                table.popitem(last=False)
            table[key] = value
        return table[key]

    @property
    def has_store(self) -> bool:
        return self._rows is not None

    def rows(self, **filters: Any) -> list[dict[str, Any]]:
        """The store's result rows matching `filters` (read-only); [] without a store."""
        return self._rows(**filters) if self._rows is not None else []

    def study_storage(self) -> str:
        """The database URL where searches keep their studies: the store's, else in memory."""
        return self.store_url or IN_MEMORY_STUDIES
