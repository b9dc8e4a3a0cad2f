"""Leaderboard tables from stored rows: per group (`reports.groups`: a task and model family)
and method, the figures of `reports.aggregate` per seed, then their mean and 95 % t-interval
over seeds. Where a group's dense model is a stand-in, the leaderboard says so.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from reports import aggregate as agg
from reports.groups import Group, has_nonzero

FIGURES = ("hypervolume", "iso_reduction", "iso_reduction_nonzero", "best_error", "search_seconds")


CONVERGENCE_TOLERANCE = 0.1  # converged: the dense error at S steps within 10 % of its error at 2S


def convergence(groups: list[Group]) -> dict[str, dict[str, Any]]:
    """Per group with a dense baseline: whether its dense model converged at the group's
    budget S, judged against the same dense model trained for 2S steps (the baseline's
    convergence check rows, or a dense baseline run at 2S of the same task and family in the
    store), on the seeds both have. `status` is "converged", "not converged" or "not checked"
    (no 2S run)."""
    out: dict[str, dict[str, Any]] = {}
    by_budget = {(g.task, g.family, g.budget): g for g in groups if g.dense_from_baseline}
    for g in groups:
        if not g.dense_from_baseline or g.budget is None:
            continue
        twice = by_budget.get((g.task, g.family, 2 * g.budget))
        at_2s = g.dense_error_2s or (twice.dense_error if twice is not None else {})
        seeds = sorted(set(g.dense_error) & set(at_2s))
        if not seeds:
            out[g.key] = {"status": "not checked", "budget": g.budget}
            continue
        error_s = float(np.mean([g.dense_error[s] for s in seeds]))
        error_2s = float(np.mean([at_2s[s] for s in seeds]))
        converged = error_s <= error_2s * (1 + CONVERGENCE_TOLERANCE)
        out[g.key] = {
            "status": "converged" if converged else "not converged",
            "budget": g.budget,
            "error_s": error_s,
            "error_2s": error_2s,
            "seeds": seeds,
        }
    return out


def run_search_seconds(rows: pd.DataFrame) -> float:
    """Search cost of a method for one seed: per run, the largest `search_seconds` of its
    candidates (each counts all training spent to produce it, so a sequential search's later
    candidates include the earlier ones); summed over runs (e.g. one run per knob value)."""
    per_run = rows.groupby("run_key")["search_seconds"].max()
    return float(per_run.sum()) if per_run.notna().any() else float("nan")


def seed_figures(group: Group) -> pd.DataFrame:
    """One line per (method, seed): hypervolume, iso-quality reduction (also on non-zero
    FLOP/s where they differ), best error, candidates and search cost."""
    records = []
    for (method, seed), rows in group.rows.groupby(["method", "seed"], sort=True):
        ok = rows[rows["status"] == "ok"]
        f, e = ok["flops"].to_numpy(float), ok["error"].to_numpy(float)
        dense_error = group.dense_error_for(seed)
        rec: dict[str, Any] = {
            "group": group.key,
            "method": method,
            "seed": int(seed),
            "candidates": len(ok),
            "failed": int((rows["status"] != "ok").sum()),
            "reference": bool(rows["reference"].any()),
            "hypervolume": agg.hypervolume(f, e, group.dense_flops, group.ref_error) if len(ok) else np.nan,
            "iso_reduction": agg.iso_quality_reduction(f, e, group.dense_flops, dense_error, group.tolerance),
            "iso_reduction_nonzero": np.nan,
            "best_error": float(e.min()) if len(e) else np.nan,
            "search_seconds": run_search_seconds(ok) if len(ok) else np.nan,
        }
        if len(ok) and has_nonzero(ok):
            nz = ok["nonzero_flops"].to_numpy(float)
            rec["iso_reduction_nonzero"] = agg.iso_quality_reduction(
                nz, e, group.dense_flops, dense_error, group.tolerance
            )
            rec["hypervolume_nonzero"] = agg.hypervolume(nz, e, group.dense_flops, group.ref_error)
        records.append(rec)
    return pd.DataFrame(records)


def leaderboard(groups: list[Group]) -> pd.DataFrame:
    """One line per (task, model family, method): every figure as mean, CI bounds and n over
    seeds (numeric columns, for CSV); sorted by group, then hypervolume, references last."""
    records = []
    for group in groups:
        per_seed = seed_figures(group)
        for method, seeds in per_seed.groupby("method", sort=True):
            rows = group.rows[group.rows["method"] == method]
            ok = rows[rows["status"] == "ok"]
            rec: dict[str, Any] = {
                "group": group.key,
                "task": group.task,
                "family": group.family,
                "method": method,
                "kind": "reference" if seeds["reference"].any() else "method",
                "seeds": ",".join(str(s) for s in sorted(seeds["seed"])),
                "candidates": int(seeds["candidates"].sum()),
                "failed": int(seeds["failed"].sum()),
                "metric": group.metric,
                "flops_unit": group.flops_unit,
                "min_flops": float(ok.loc[ok["flops"] > 0, "flops"].min()) if len(ok) else np.nan,  # 0 = not counted
                "nonzero_flops_differ": bool(len(ok) and has_nonzero(ok)),
            }
            for name in FIGURES + ("hypervolume_nonzero",):
                ci = agg.mean_ci(seeds[name]) if name in seeds else agg.mean_ci([])
                rec.update({f"{name}_mean": ci.mean, f"{name}_lo": ci.lo, f"{name}_hi": ci.hi, f"{name}_n": ci.n})
            records.append(rec)
    board = pd.DataFrame(records)
    if board.empty:
        return board
    board["_ref"] = board["kind"] == "reference"
    board = board.sort_values(["group", "_ref", "hypervolume_mean"], ascending=[True, True, False], na_position="last")
    return board.drop(columns="_ref").reset_index(drop=True)


def fronts_table(groups: list[Group]) -> pd.DataFrame:
    """Every method's Pareto front per seed: the candidates on it, cheapest first."""
    records = []
    for group in groups:
        for (method, seed), rows in group.ok.groupby(["method", "seed"], sort=True):
            rows = rows.reset_index(drop=True)
            for rank, i in enumerate(agg.pareto_front(rows["flops"], rows["error"])):
                r = rows.iloc[i]
                records.append(
                    {
                        "group": group.key,
                        "method": method,
                        "seed": int(seed),
                        "rank": rank,
                        "label": r["label"],
                        "widths": _widths(r["widths"]),
                        "flops": r["flops"],
                        "nonzero_flops": r["nonzero_flops"],
                        "flops_unit": r["flops_unit"],
                        "error": r["error"],
                        "metric": r["metric"],
                    }
                )
    return pd.DataFrame(records)


def label_means(group: Group) -> pd.DataFrame:
    """Per (method, label): mean FLOP/s, non-zero FLOP/s, offline latency and error over seeds."""
    ok = group.ok
    if ok.empty:
        return pd.DataFrame(
            columns=["method", "label", "flops", "nonzero_flops", "latency", "error", "seeds", "reference"]
        )
    out = ok.groupby(["method", "label"], sort=True).agg(
        flops=("flops", "mean"),
        nonzero_flops=("nonzero_flops", "mean"),
        latency=("latency_offline_ms", "mean"),
        error=("error", "mean"),
        seeds=("seed", "nunique"),
        reference=("reference", "any"),
    )
    return out.reset_index()


def representatives(group: Group) -> pd.DataFrame:
    """One candidate setting per method for the breakdown bars: the cheapest label whose mean
    error is within the iso-quality tolerance of the dense model, else the most accurate."""
    means = label_means(group)
    picks = []
    for _, rows in means.groupby("method", sort=True):
        within = rows[rows["error"] <= group.dense_error_mean + group.tolerance]
        picks.append(within.nsmallest(1, "flops") if not within.empty else rows.nsmallest(1, "error"))
    return pd.concat(picks, ignore_index=True) if picks else means


def breakdown_table(group: Group) -> pd.DataFrame:
    """Long table: per (method, label, breakdown key) the mean and 95 % CI over seeds. Keys
    are whatever the rows carry (SNR ranges, attacks, seen/unseen, ...), in first-seen order."""
    records = []
    for (method, label), rows in group.ok.groupby(["method", "label"], sort=True):
        keys = breakdown_keys(rows)
        for key in keys:
            ci = agg.mean_ci([b.get(key, np.nan) if isinstance(b, dict) else np.nan for b in rows["breakdowns"]])
            records.append(
                {
                    "group": group.key,
                    "method": method,
                    "label": label,
                    "flops": rows["flops"].mean(),
                    "key": key,
                    "mean": ci.mean,
                    "lo": ci.lo,
                    "hi": ci.hi,
                    "n": ci.n,
                }
            )
    return pd.DataFrame(records, columns=["group", "method", "label", "flops", "key", "mean", "lo", "hi", "n"])


def breakdown_keys(rows: pd.DataFrame) -> list[str]:
    keys: dict[str, None] = {}
    for b in rows["breakdowns"]:
        if isinstance(b, dict):
            keys.update({k: None for k, v in b.items() if isinstance(v, (int, float))})
    return list(keys)


def failed_rows(df: pd.DataFrame) -> pd.DataFrame:
    """Failed candidates with their reasons (listed, never silently dropped)."""
    bad = df[df["status"] != "ok"]
    return (
        bad[["group", "method", "seed", "label", "reason", "run_key", "created_at"]].fillna("").reset_index(drop=True)
    )


def metadata(df: pd.DataFrame) -> dict[str, Any]:
    """What produced the rows: package versions, git revisions, machines, dates, seeds, scales."""
    versions: dict[str, set[str]] = {}
    for v in df["versions"]:
        for k, val in (v or {}).items() if isinstance(v, dict) else ():
            versions.setdefault(k, set()).add(str(val))
    machines = sorted(
        {
            f"{m.get('hostname', '?')} ({m.get('processor', '?')}, {m.get('cpu_count', '?')} CPUs)"
            for m in df["machine"]
            if isinstance(m, dict)
        }
    )
    dates = sorted(d for d in df["created_at"] if isinstance(d, str))
    return {
        "versions": {k: ", ".join(sorted(v)) for k, v in sorted(versions.items())},
        "git_revisions": sorted({g for g in df["git_rev"] if isinstance(g, str)}),
        "machines": machines,
        "dates": (dates[0], dates[-1]) if dates else ("", ""),
        "seeds": sorted({int(s) for s in df["seed"]}),
        "scales": sorted({s for s in df["scale"] if isinstance(s, str)}),
        "rows": len(df),
        "failed": int((df["status"] != "ok").sum()),
    }


def _widths(w: Any) -> str:
    return ",".join(f"{k}={v}" for k, v in w.items()) if isinstance(w, dict) else ""
