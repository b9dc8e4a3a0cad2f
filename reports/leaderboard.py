"""Leaderboard tables from stored rows: per (task, model family) and method, the figures of
`reports.aggregate` per seed, then their mean and 95 % t-interval over seeds.

Input is the store's `results` table as a DataFrame (reports read stored
results, never live objects). The dense model of a group is the row its method marked
`info["dense"]`; where a group has none (e.g. a store of one method), the largest ok candidate
of each seed stands in for it, and the leaderboard says so.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from reports import aggregate as agg

FIGURES = ("hypervolume", "iso_reduction", "iso_reduction_nonzero", "best_error", "search_seconds")


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


def _first(series: pd.Series) -> str | None:
    values = [v for v in series if isinstance(v, str) and v]
    return values[0] if values else None


def has_nonzero(rows: pd.DataFrame) -> bool:
    """Whether non-zero FLOP/s differ from FLOP/s (unstructured sparsity, e.g. magnitude)."""
    nz, f = rows["nonzero_flops"], rows["flops"]
    return bool(((nz < f * (1 - 1e-6)) & nz.notna()).any())


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
