"""The headline table: at each FLOP/s target, which method gives the lowest error for the
same training budget.

Per (task, model family, budget) group: rows are the targets, columns the methods, cells
the error's mean and 95 % interval over seeds. Per target the method with the lowest mean
is marked best, and every other method shows its paired difference to it (paired by seed,
since the seeds share data and dense model) with its interval. A cell whose candidates
missed the target by more than the tolerance is marked: over the target (it spends more
FLOP/s than asked) or under it (cheaper than asked, so not at the same operating point).

Input is the stored rows only (`target_ratio`, `target_met`, `achieved_ratio`, `error`).
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from bench.targets import TOLERANCE
from reports import aggregate as agg
from reports.groups import Group

COLUMNS = [
    "group",
    "target",
    "method",
    "sparse",
    "n",
    "error_mean",
    "error_lo",
    "error_hi",
    "achieved_ratio",
    "over",
    "under",
    "best",
    "diff_mean",
    "diff_lo",
    "diff_hi",
    "diff_n",
]
OVER, UNDER = "↑", "↓"


def target_rows(group: Group) -> pd.DataFrame:
    """The group's ok candidates that were asked for a target, one per (target, method,
    seed) (the lowest error where a run gave several)."""
    ok = group.ok
    if "target_ratio" not in ok or ok.empty:
        return ok.iloc[0:0]
    rows = ok[pd.to_numeric(ok["target_ratio"], errors="coerce").notna() & ~ok["reference"]].copy()
    rows["target_ratio"] = rows["target_ratio"].astype(float)
    rows = rows.sort_values("error").drop_duplicates(["target_ratio", "method", "seed"])
    return rows


def target_table(group: Group) -> pd.DataFrame:
    """Long table, one line per (target, method): see `COLUMNS`."""
    rows = target_rows(group)
    records = []
    for target, at in rows.groupby("target_ratio", sort=False):
        errors = {m: r.set_index("seed")["error"].astype(float) for m, r in at.groupby("method")}
        means = {m: float(e.mean()) for m, e in errors.items()}
        best = min(means, key=lambda m: (means[m], m))
        for method, r in at.groupby("method", sort=True):
            ci = agg.mean_ci(r["error"])
            achieved = pd.to_numeric(r["achieved_ratio"], errors="coerce")
            over = int((achieved > target * (1 + TOLERANCE)).sum())
            under = int((achieved < target * (1 - TOLERANCE)).sum())
            if method == best:
                diff = agg.MeanCI(math.nan, math.nan, math.nan, 0)
            else:
                common = errors[method].index.intersection(errors[best].index)
                diff = agg.mean_ci((errors[method][common] - errors[best][common]).to_numpy(float))
            sparse = bool((r["nonzero_flops"] < r["flops"] * (1 - 1e-6)).any())
            records.append(
                {
                    "group": group.key,
                    "target": float(target),
                    "method": method,
                    "sparse": sparse,
                    "n": ci.n,
                    "error_mean": ci.mean,
                    "error_lo": ci.lo,
                    "error_hi": ci.hi,
                    "achieved_ratio": float(achieved.mean()),
                    "over": over,
                    "under": under,
                    "best": method == best,
                    "diff_mean": diff.mean,
                    "diff_lo": diff.lo,
                    "diff_hi": diff.hi,
                    "diff_n": diff.n,
                }
            )
    table = pd.DataFrame(records, columns=COLUMNS)
    return table.sort_values(["target", "method"], ascending=[False, True]).reset_index(drop=True)


def cell_text(r: pd.Series, fmt: str = "{:.3g}") -> str:
    """'5.41 ± 0.32 best', or '6.02 ± 0.4 (+0.61 ± 0.3)' with its paired difference to the best;
    ↑ / ↓ with the seeds that missed the target over / under."""
    text = agg.MeanCI(r["error_mean"], r["error_lo"], r["error_hi"], int(r["n"])).format(fmt)
    if r["best"]:
        text += " best"
    elif r["diff_n"] > 0:
        d = agg.MeanCI(r["diff_mean"], r["diff_lo"], r["diff_hi"], int(r["diff_n"]))
        sign = "+" if d.mean >= 0 else ""
        text += f" ({sign}{d.format(fmt)})"
    n = int(r["n"])
    if r["over"]:
        text += f" {OVER}{int(r['over'])}/{n}"
    if r["under"]:
        text += f" {UNDER}{int(r['under'])}/{n}"
    return text


def wide(table: pd.DataFrame, fmt: str = "{:.3g}") -> tuple[pd.DataFrame, pd.DataFrame]:
    """The headline table to read: a row per target (largest first), a column per method,
    plus the best method's name; and the numbers to sort each cell by (the error mean)."""
    if table.empty:
        return pd.DataFrame(), pd.DataFrame()
    methods = sorted(table["method"].unique())
    sparse = set(table.loc[table["sparse"], "method"])
    header = {m: f"{m} *" if m in sparse else m for m in methods}
    shown, keys = [], []
    for target, at in table.groupby("target", sort=False):
        by = at.set_index("method")
        best = by.index[by["best"]][0]
        shown.append(
            {
                "FLOP/s target": f"{target:g}",
                "best": best,
                **{header[m]: cell_text(by.loc[m], fmt) if m in by.index else "-" for m in methods},
            }
        )
        keys.append(
            {
                "FLOP/s target": target,
                "best": best,
                **{header[m]: by.loc[m, "error_mean"] if m in by.index else np.nan for m in methods},
            }
        )
    return pd.DataFrame(shown), pd.DataFrame(keys)


LEGEND = (
    f"Cells: error mean ± 95 % half-interval over seeds; in brackets the paired difference (by seed) to the "
    f"best method at that target. {OVER}k/n: k of n seeds' candidates spent over 10 % more FLOP/s than the target; "
    f"{UNDER}k/n: over 10 % less (a cheaper operating point). * targets in non-zero FLOP/s (unstructured sparsity: "
    f"the counted FLOP/s do not fall). Every candidate trained for the same number of steps."
)


def control_table(group: Group) -> pd.DataFrame:
    """Found shape or found weights: each candidate retrained from scratch (rows whose info
    names `architecture_of`, the method whose shape they retrain) against the candidate it
    copies, per (method, target or label): both errors' means and the paired difference
    (retrained minus found; positive: the method's own weights were better than a fresh start)."""
    ok = group.ok
    info = ok["info"].apply(lambda i: i if isinstance(i, dict) else {})
    controls = ok[info.apply(lambda i: "architecture_of" in i)]
    if controls.empty:
        return pd.DataFrame()
    found = ok.set_index(["run_key", "label"])["error"]
    records = []
    keyed = controls.assign(
        source=[i["architecture_of"] for i in info[controls.index]],
        source_label=[i["source_label"] for i in info[controls.index]],
        source_run=[i["source_run"] for i in info[controls.index]],
    )
    for (source, label), r in keyed.groupby(["source", "source_label"], sort=True):
        pairs = [(found.get((run, label)), e) for run, e in zip(r["source_run"], r["error"])]
        pairs = [(a, b) for a, b in pairs if a is not None and np.isfinite(a)]
        if not pairs:
            continue
        src, new = agg.mean_ci([a for a, _ in pairs]), agg.mean_ci([b for _, b in pairs])
        diff = agg.mean_ci([b - a for a, b in pairs])
        records.append(
            {
                "method": source,
                "candidate": label,
                "seeds": len(pairs),
                "found": src.format(),
                "retrained from a new init": new.format(),
                "retrained - found": diff.format(),
            }
        )
    return pd.DataFrame(records)
