"""Tables built from stored result rows (never from live objects)."""
from __future__ import annotations

import json
from typing import Any, Iterable

import pandas as pd

from bench.complexity import format_count

# Columns of the short table printed after a run and by `bench results --format table`.
SUMMARY_COLUMNS = ["task", "method", "seed", "label", "status", "widths", "params", "flops", "flops_unit", "metric", "error", "train_s"]


def summary_frame(rows: Iterable[dict[str, Any]]) -> pd.DataFrame:
    """One line per stored row, numbers formatted for reading."""
    records = []
    for r in rows:
        ok = r.get("status") == "ok"
        records.append({
            "task": r["task"],
            "method": r["method"],
            "seed": r["seed"],
            "label": r.get("label") or "",
            "status": r["status"] if ok else f"failed: {r.get('reason') or ''}",
            "widths": ",".join(f"{k}={v}" for k, v in (r.get("widths") or {}).items()),
            "params": format_count(r["params"]) if ok else "",
            "flops": format_count(r["flops"]) if ok else "",
            "flops_unit": r.get("flops_unit") or "" if ok else "",
            "metric": r.get("metric") or "",
            "error": f"{r['error']:.4g}" if ok else "",
            "train_s": f"{r['train_seconds']:.1f}" if ok else "",
        })
    return pd.DataFrame(records, columns=SUMMARY_COLUMNS)


def rows_to_json(rows: list[dict[str, Any]]) -> str:
    """A JSON list of objects, one per row, all columns."""
    return json.dumps(rows, indent=2, default=str)


def rows_to_csv(rows: list[dict[str, Any]]) -> str:
    """CSV with one line per row; nested values (widths, breakdowns, ...) as JSON strings."""
    flat = [{k: json.dumps(v) if isinstance(v, (dict, list)) else v for k, v in r.items()} for r in rows]
    from bench.store import RESULT_COLUMNS

    return pd.DataFrame(flat, columns=RESULT_COLUMNS).to_csv(index=False)
