"""Tables built from stored result rows (never from live objects)."""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

import pandas as pd

from bench.complexity import format_count

# Columns of the short table printed after a run and by `bench results --format table`.
SUMMARY_COLUMNS = [
    "task",
    "method",
    "seed",
    "label",
    "status",
    "widths",
    "params",
    "flops",
    "flops_unit",
    "metric",
    "error",
    "train_s",
]


def summary_frame(rows: Iterable[dict[str, Any]]) -> pd.DataFrame:
    """One line per stored row, numbers formatted for reading."""
    records = []
    for r in rows:
        ok = r.get("status") == "ok"
        records.append(
            {
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
            }
        )
    return pd.DataFrame(records, columns=SUMMARY_COLUMNS)


def rows_to_json(rows: list[dict[str, Any]]) -> str:
    """A JSON list of objects, one per row, all columns."""
    return json.dumps(rows, indent=2, default=str)


def rows_to_csv(rows: list[dict[str, Any]]) -> str:
    """CSV with one line per row; nested values (widths, breakdowns, ...) as JSON strings."""
    flat = [{k: json.dumps(v) if isinstance(v, (dict, list)) else v for k, v in r.items()} for r in rows]
    from bench.store_tables import RESULT_COLUMNS

    return pd.DataFrame(flat, columns=RESULT_COLUMNS).to_csv(index=False)


# --- the leaderboard, for reading (Markdown, HTML) -------------------------------------------
# Header -> (column of `leaderboard.leaderboard()` to sort by, how to show the row).
def _ci_text(row: pd.Series, name: str, fmt: str = "{:.3g}", suffix: str = "") -> str:
    from reports.aggregate import MeanCI

    ci = MeanCI(row[f"{name}_mean"], row[f"{name}_lo"], row[f"{name}_hi"], int(row[f"{name}_n"]))
    text = ci.format(fmt)
    return text if text == "-" else text + suffix


def leaderboard_display(board: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The leaderboard as text cells (mean ± 95 % half-interval over seeds) and, aligned
    with it, the numbers to sort each column by."""
    shown, keys = [], []
    for _, r in board.iterrows():
        seeds = len(str(r["seeds"]).split(",")) if r["seeds"] else 0
        iso = _ci_text(r, "iso_reduction", "{:.2f}", "x")
        if iso != "-" and r["iso_reduction_n"] < seeds:
            iso += f" ({int(r['iso_reduction_n'])}/{seeds} seeds)"
        nonzero = "-"
        if r["nonzero_flops_differ"]:
            nonzero = _ci_text(r, "iso_reduction_nonzero", "{:.2f}", "x")
            if nonzero != "-" and r["iso_reduction_nonzero_n"] < seeds:
                nonzero += f" ({int(r['iso_reduction_nonzero_n'])}/{seeds} seeds)"
            nonzero += f"; hypervolume {_ci_text(r, 'hypervolume_nonzero', '{:.4f}')} *"
        shown.append(
            {
                "task": r["task"],
                "model": r["family"] or "-",
                "method": r["method"] + (" [reference]" if r["kind"] == "reference" else ""),
                "seeds": r["seeds"],
                "candidates": str(r["candidates"]),
                "failed": str(r["failed"]),
                "best error": _ci_text(r, "best_error", "{:.4g}") + (f" {r['metric']}" if r["metric"] else ""),
                "hypervolume": _ci_text(r, "hypervolume", "{:.4f}"),
                "FLOP/s cut at iso-quality": iso,
                "non-zero FLOP/s cut *": nonzero,
                "search cost (s)": _ci_text(r, "search_seconds", "{:.1f}"),
                "cheapest": (format_count(r["min_flops"]) + f" {r['flops_unit']}") if pd.notna(r["min_flops"]) else "-",
            }
        )
        keys.append(
            {
                "task": r["task"],
                "model": r["family"],
                "method": r["method"],
                "seeds": seeds,
                "candidates": r["candidates"],
                "failed": r["failed"],
                "best error": r["best_error_mean"],
                "hypervolume": r["hypervolume_mean"],
                "FLOP/s cut at iso-quality": r["iso_reduction_mean"],
                "non-zero FLOP/s cut *": r["iso_reduction_nonzero_mean"],
                "search cost (s)": r["search_seconds_mean"],
                "cheapest": r["min_flops"],
            }
        )
    return pd.DataFrame(shown), pd.DataFrame(keys)


def to_markdown(df: pd.DataFrame) -> str:
    """A GitHub-flavoured Markdown table (no tabulate dependency); '|' in cells escaped."""

    def cell(v: Any) -> str:
        return str(v).replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(cell(c) for c in df.columns) + " |", "| " + " | ".join("---" for _ in df.columns) + " |"]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in df.itertuples(index=False)]
    return "\n".join(lines) + "\n"
