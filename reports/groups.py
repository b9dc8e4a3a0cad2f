"""Groups of stored rows: per (task, model family), its rows and the dense model every
figure of the leaderboard is relative to.

Input is the store's `results` table as a DataFrame (reports read stored results, never
live objects). The dense model of a group is the row its method marked `info["dense"]`;
where a group has none (e.g. a store of one method), the largest ok candidate of each seed
stands in for it.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from reports import aggregate as agg


def load_frame(store, tasks: Iterable[str] | None = None) -> pd.DataFrame:
    """The store's rows, with the columns the reports group by: `family` (the task config's
    `model`, '' if none), `group` ('vad/crnn' or 'synthetic') and `reference` (a reference
    row such as webrtcvad, shown apart from the competing methods)."""
    df = store.dataframe()
    if tasks:
        df = df[df["task"].isin(list(tasks))]
    df = df.reset_index(drop=True)
    df["check"] = [bool(isinstance(i, dict) and i.get("convergence_check")) for i in df["info"]]
    df["dense"] = [bool(isinstance(i, dict) and i.get("dense")) for i in df["info"]]
    df["latency_offline_ms"] = [offline_latency(records) for records in df.get("latency", [None] * len(df))]
    df["family"] = [str((c or {}).get("model") or "") if isinstance(c, dict) else "" for c in df["task_config"]]
    df["budget"] = [_budget(c) for c in df["config"]]
    df["group"] = [f"{t}/{f}" if f else t for t, f in zip(df["task"], df["family"])]
    # Rows trained with different budgets are never compared: each budget is a group of its own.
    budgets = df.groupby("group")["budget"].nunique()
    df["group"] = [f"{g}@{b}" if budgets.get(g, 1) > 1 else g for g, b in zip(df["group"], df["budget"])]
    df["reference"] = [bool(isinstance(i, dict) and i.get("reference")) for i in df["info"]]
    for col in ("flops", "nonzero_flops", "error", "search_seconds", "train_seconds", "target_ratio", "achieved_ratio"):
        df[col] = pd.to_numeric(df[col], errors="coerce")
    return df


def _budget(config) -> int | None:
    """A row's training budget (optimizer steps per candidate lineage), from its resolved config."""
    if not isinstance(config, dict):
        return None
    steps = (config.get("budget") or {}).get("train_steps") or (config.get("train") or {}).get("steps")
    return int(steps) if steps else None


LATENCY_RUNTIME = "onnxruntime"  # the deployment runtime whose offline figure the report shows


def offline_latency(records: Any, runtime: str = LATENCY_RUNTIME) -> float:
    """Median ms of the longest offline input timed in `runtime` (the measurement phase's
    records of a row), or NaN where the row was not measured there."""
    if not isinstance(records, list):
        return np.nan
    offline = [
        r for r in records if isinstance(r, dict) and r.get("runtime") == runtime and r.get("shape") == "offline"
    ]
    if not offline:
        return np.nan
    return float(max(offline, key=lambda r: r.get("audio_seconds") or 0)["median_ms"])


def offline_seconds(rows: pd.DataFrame, runtime: str = LATENCY_RUNTIME) -> float | None:
    """The audio length of the offline figure `offline_latency` picks (the longest timed)."""
    lengths = [
        r.get("audio_seconds")
        for records in rows.get("latency", [])
        if isinstance(records, list)
        for r in records
        if isinstance(r, dict) and r.get("runtime") == runtime and r.get("shape") == "offline"
    ]
    return max((x for x in lengths if x), default=None)


@dataclass
class Group:
    """One (task, model family): its rows and the dense model every figure is relative to."""

    key: str
    task: str
    family: str
    rows: pd.DataFrame
    metric: str
    flops_unit: str
    dense_flops: float
    dense_error: dict[int, float]  # per seed; seeds without a dense row use the mean
    dense_from_baseline: bool  # False: the largest candidate stood in for the dense model
    ref_error: float
    ref_fixed: bool  # False: metric without a fixed reference; hypervolumes not comparable
    budget: int | None = None  # optimizer steps per candidate lineage
    metric_info: dict[str, Any] = field(
        default_factory=dict
    )  # the task's description of its metric (label, chance, ...)
    dense_error_2s: dict[int, float] = field(
        default_factory=dict
    )  # per seed: the dense model trained for twice the budget
    uncounted_ops: list[str] = field(default_factory=list)  # of the competing methods' candidates
    reference_uncounted: list[str] = field(default_factory=list)  # of reference rows (e.g. a C library)

    @property
    def ok(self) -> pd.DataFrame:
        return self.rows[self.rows["status"] == "ok"]

    @property
    def dense_error_mean(self) -> float:
        return float(np.mean(list(self.dense_error.values()))) if self.dense_error else float("nan")

    def dense_error_for(self, seed: int) -> float:
        return self.dense_error.get(int(seed), self.dense_error_mean)

    @property
    def tolerance(self) -> float:
        return agg.iso_tolerance(self.metric_info.get("iso_tolerance"), self.dense_error_mean)

    @property
    def dense_latency(self) -> float:
        """Median offline latency of the dense rows (NaN if not measured)."""
        dense = self.ok[self.ok["dense"]]["latency_offline_ms"] if "dense" in self.ok else pd.Series(dtype=float)
        return float(dense.median()) if dense.notna().any() else float("nan")

    @property
    def metric_label(self) -> str:
        return self.metric_info.get("label") or self.metric or "error"

    @property
    def metric_unit(self) -> str:
        """The metric's unit as its task declares it ("" for a ratio without unit)."""
        return self.metric_info.get("unit") or ""


def make_groups(df: pd.DataFrame) -> list[Group]:
    """Split the rows by (task, model family) and find each group's dense model."""
    groups = []
    refs = df[df["reference"]]
    for key, all_rows in df.groupby("group", sort=True):
        # A reference is run once per task, whatever the model family: shown beside every family.
        others = refs[(refs["task"] == all_rows["task"].iloc[0]) & (refs["group"] != key)]
        all_rows = pd.concat([all_rows, others]) if len(others) else all_rows
        rows = all_rows[~all_rows["check"]]  # convergence checks are no candidates
        checks = all_rows[all_rows["check"] & (all_rows["status"] == "ok")]
        ok = rows[(rows["status"] == "ok") & ~rows["reference"]]
        dense = ok[ok["dense"]]
        from_baseline = not dense.empty
        if not from_baseline and not ok.empty:  # stand-in: each seed's largest candidate
            dense = ok.loc[ok.groupby("seed")["flops"].idxmax()]
        dense_error = {int(s): float(e) for s, e in dense.groupby("seed")["error"].mean().items()}
        metric = _first(ok["metric"]) or _first(rows["metric"]) or ""
        info = _first_dict(ok["metric_info"]) or _first_dict(rows["metric_info"])
        ref, fixed = agg.reference_error(info.get("chance"), list(ok["error"]))
        uncounted = sorted({op for ops in ok["uncounted_ops"] if isinstance(ops, list) for op in ops})
        refs = rows[rows["reference"]]
        ref_uncounted = sorted({op for ops in refs["uncounted_ops"] if isinstance(ops, list) for op in ops})
        groups.append(
            Group(
                key=str(key),
                task=str(rows["task"].iloc[0]),
                family=str(rows["family"].iloc[0]),
                rows=rows,
                metric=metric,
                flops_unit=_first(ok["flops_unit"]) or "",
                dense_flops=float(dense["flops"].median()) if not dense.empty else float("nan"),
                dense_error=dense_error,
                dense_from_baseline=from_baseline,
                ref_error=ref,
                ref_fixed=fixed,
                metric_info=info,
                budget=_first_int(rows["budget"]),
                uncounted_ops=uncounted,
                dense_error_2s={int(s): float(e) for s, e in checks.groupby("seed")["error"].mean().items()},
                reference_uncounted=ref_uncounted,
            )
        )
    return groups


def _first_dict(series: pd.Series) -> dict[str, Any]:
    values = [v for v in series if isinstance(v, dict)]
    return values[0] if values else {}


def _first_int(series: pd.Series) -> int | None:
    values = [int(v) for v in series if pd.notna(v)]
    return values[0] if values else None


def _first(series: pd.Series) -> str | None:
    values = [v for v in series if isinstance(v, str) and v]
    return values[0] if values else None


def has_nonzero(rows: pd.DataFrame) -> bool:
    """Whether non-zero FLOP/s differ from FLOP/s (unstructured sparsity, e.g. magnitude)."""
    nz, f = rows["nonzero_flops"], rows["flops"]
    return bool(((nz < f * (1 - 1e-6)) & nz.notna()).any())
