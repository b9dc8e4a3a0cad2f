"""Figures of the report, drawn with matplotlib's Agg canvas from stored rows only.

Each function takes a `leaderboard.Group` and returns PNG bytes (the HTML embeds them as
base64; the report also writes them as files). Figures are built on `Figure` objects, not
pyplot, so nothing global is touched and nothing needs a display.
"""

from __future__ import annotations

import io

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import EngFormatter, LogLocator, NullFormatter

from reports import aggregate as agg
from reports.groups import LATENCY_RUNTIME, Group, has_nonzero, offline_seconds
from reports.leaderboard import breakdown_table, representatives

DPI = 100
_COLORS = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf", "#bcbd22", "#7f7f7f"]


def method_colors(methods: list[str]) -> dict[str, str]:
    """A stable colour per method name (sorted), the same in every figure of a report."""
    return {m: _COLORS[i % len(_COLORS)] for i, m in enumerate(sorted(methods))}


def _png(fig: Figure) -> bytes:
    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, bbox_inches="tight")
    return buf.getvalue()


def tradeoff_png(group: Group, colors: dict[str, str]) -> bytes:
    """Error against FLOP/s (log x): per method the median Pareto front across seeds with a
    min-max band, its candidates as dots, the dense model and the iso-quality line.
    Non-zero FLOP/s fronts (unstructured sparsity) are dashed and marked; reference rows
    are drawn as references, not fronts."""
    fig = Figure(figsize=(7.5, 4.6))
    ax = fig.add_subplot()
    ok = group.ok
    for method, rows in ok[~ok["reference"]].groupby("method", sort=True):
        variants = [("flops", "-", method)]
        if has_nonzero(rows):
            variants.append(("nonzero_flops", "--", f"{method} (non-zero FLOP/s*)"))
        for column, style, label in variants:
            fronts = []
            for _, seed_rows in rows.groupby("seed"):
                idx = agg.pareto_front(seed_rows[column], seed_rows["error"])
                fronts.append((seed_rows[column].to_numpy(float)[idx], seed_rows["error"].to_numpy(float)[idx]))
            grid, med, lo, hi = agg.median_front(fronts)
            c = colors.get(method, "k")
            if len(grid) > 1:
                ax.plot(
                    grid,
                    med,
                    style,
                    color=c,
                    drawstyle="steps-post",
                    label=f"{label} (median front, {len(fronts)} seed(s))",
                )
                ax.fill_between(grid, lo, hi, step="post", color=c, alpha=0.15, linewidth=0)
            ax.scatter(
                rows[column],
                rows["error"],
                s=14,
                color=c,
                alpha=0.55,
                marker="o" if column == "flops" else "x",
                label=None if len(grid) > 1 else label,
            )
    if np.isfinite(group.dense_flops):
        errs = list(group.dense_error.values())
        ax.errorbar(
            [group.dense_flops],
            [np.mean(errs)],
            yerr=[[np.mean(errs) - min(errs)], [max(errs) - np.mean(errs)]],
            fmt="*",
            color="k",
            markersize=13,
            capsize=3,
            zorder=5,
            label="dense model" if group.dense_from_baseline else "largest candidate (no dense model run)",
        )
        ax.axhline(
            group.dense_error_mean + group.tolerance,
            color="k",
            linestyle=":",
            linewidth=0.9,
            label=f"iso-quality: dense + {group.tolerance:.3g}",
        )
    for method, rows in ok[ok["reference"]].groupby("method"):
        flops, err = rows["flops"].to_numpy(float), rows["error"].to_numpy(float)
        if np.isfinite(flops).all() and (flops > 0).all():
            ax.scatter(flops, err, marker="P", s=70, color="0.35", zorder=6, label=f"{method} (reference)")
        else:  # no counted FLOP/s (not a torch model): its error as a line
            ax.axhline(
                float(np.nanmean(err)),
                color="0.35",
                linestyle="-.",
                linewidth=1.2,
                label=f"{method} (reference, FLOP/s not counted)",
            )
    if np.isfinite(group.dense_flops) and "target_ratio" in ok:
        asked = sorted({float(t) for t in ok["target_ratio"].dropna()}, reverse=True)
        for i, t in enumerate(asked):  # the operating points every method was asked for
            ax.axvline(
                t * group.dense_flops,
                color="0.5",
                linestyle="--",
                linewidth=0.8,
                label="FLOP/s targets" if i == 0 else None,
            )
            ax.annotate(
                f"{t:g}",
                (t * group.dense_flops, 1.0),
                xycoords=("data", "axes fraction"),
                fontsize=7,
                color="0.4",
                ha="center",
                va="bottom",
            )
    ax.set_xscale("log")
    ax.xaxis.set_major_formatter(EngFormatter(sep=""))
    lo, hi = ax.get_xlim()
    if hi / lo < 30:  # under ~1.5 decades few decade ticks show: label 2x and 5x too
        ax.xaxis.set_minor_locator(LogLocator(subs=(2.0, 5.0)))
        ax.xaxis.set_minor_formatter(EngFormatter(sep=""))
    else:
        ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_xlabel(f"{group.flops_unit or 'FLOPs'} (log scale)")
    ax.set_ylabel(group.metric_label)
    ax.set_title(f"{group.key}: quality against complexity")
    ax.grid(True, which="both", alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=7, loc="best")
    else:  # every candidate failed: say so rather than draw empty axes silently
        ax.text(
            0.5, 0.5, "no successful candidates (see failed rows)", transform=ax.transAxes, ha="center", va="center"
        )
    return _png(fig)


def latency_png(group: Group, colors: dict[str, str]) -> bytes | None:
    """Error against measured offline latency (log x), beside error against FLOP/s: every
    candidate per method, the dense model starred. None when no row was timed."""
    ok = group.ok[group.ok["latency_offline_ms"].notna()] if "latency_offline_ms" in group.ok else group.ok.iloc[0:0]
    if ok.empty:
        return None
    fig = Figure(figsize=(7.5, 4.2))
    ax = fig.add_subplot()
    for method, rows in ok.groupby("method", sort=True):
        ax.scatter(
            rows["latency_offline_ms"], rows["error"], s=16, color=colors.get(method, "k"), alpha=0.7, label=method
        )
    dense = ok[ok["dense"]] if "dense" in ok else ok.iloc[0:0]
    if not dense.empty:
        ax.scatter(
            dense["latency_offline_ms"], dense["error"], marker="*", s=140, color="k", zorder=5, label="dense model"
        )
    ax.set_xscale("log")
    seconds = offline_seconds(ok)
    ax.set_xlabel(
        f"latency, ms ({LATENCY_RUNTIME}, {seconds:g} s of input, 1 thread; log scale)" if seconds else "latency, ms"
    )
    ax.set_ylabel(group.metric_label)
    ax.set_title(f"{group.key}: quality against measured latency", fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7, loc="best")
    return _png(fig)


def breakdown_png(group: Group, colors: dict[str, str]) -> bytes | None:
    """Grouped bars: the error per breakdown key (SNR range, attack, ...) of one candidate
    setting per method (see `leaderboard.representatives`), with 95 % intervals over seeds.
    None when the group's rows carry no breakdowns."""
    table = breakdown_table(group)
    if table.empty:
        return None
    picks = representatives(group)
    keys = list(dict.fromkeys(table["key"]))
    fig = Figure(figsize=(max(6.0, 0.9 * len(keys) + 3), 4.2))
    ax = fig.add_subplot()
    width = 0.8 / max(1, len(picks))
    x = np.arange(len(keys))
    for j, pick in enumerate(picks.itertuples()):
        sub = table[(table["method"] == pick.method) & (table["label"] == pick.label)].set_index("key").reindex(keys)
        means = sub["mean"].to_numpy(float)
        half = np.nan_to_num(((sub["hi"] - sub["lo"]) / 2).to_numpy(float))
        below = np.minimum(half, np.nan_to_num(means))  # an error is never negative: clip the bar at 0
        sparse = pick.nonzero_flops < pick.flops * (1 - 1e-6)  # unstructured: only non-zero FLOP/s fall
        cost = pick.nonzero_flops if sparse else pick.flops
        cut = group.dense_flops / cost if np.isfinite(group.dense_flops) and cost else np.nan
        tag = f"{pick.method} {pick.label}" + (
            f" ({cut:.2g}x fewer{' non-zero*' if sparse else ''})" if np.isfinite(cut) and not pick.reference else ""
        )
        hatch = "//" if pick.reference else None
        ax.bar(
            x + (j - (len(picks) - 1) / 2) * width,
            means,
            width,
            yerr=[below, half],
            capsize=2,
            color=colors.get(pick.method, "0.5"),
            hatch=hatch,
            label=tag + (" [reference]" if pick.reference else ""),
        )
    ax.set_xticks(x, keys, rotation=30 if len(keys) > 4 else 0, ha="right" if len(keys) > 4 else "center")
    if group.ref_fixed:  # above chance level nothing is meaningful; long intervals run off the top
        ax.set_ylim(0, min(ax.get_ylim()[1], 1.1 * group.ref_error))
    ax.set_ylabel(group.metric_label)
    kind = group.metric_info.get("breakdowns") or "breakdown key"
    ax.set_title(f"{group.key}: {group.metric_label} per {kind} (bars: 95 % t-interval over seeds)", fontsize=10)
    ax.grid(True, axis="y", alpha=0.3)
    ax.legend(fontsize=7)
    return _png(fig)


def trajectory_png(group: Group, colors: dict[str, str]) -> bytes | None:
    """Widths over training from `info["width_trajectory"]` (noise injection and the other
    learned-width methods): one panel per width slot, one line per (method, setting) of the
    lowest seed. None when no row recorded a trajectory."""
    ok = group.ok
    traj = [
        (r.method, r.label, r.info["width_trajectory"])
        for r in ok.itertuples()
        if isinstance(r.info, dict) and isinstance(r.info.get("width_trajectory"), dict) and r.seed == ok["seed"].min()
    ]
    if not traj:
        return None
    slots = list(dict.fromkeys(s for _, _, t in traj for s in t))
    fig = Figure(figsize=(7.0, 2.6 * len(slots)))
    axes = fig.subplots(len(slots), 1, squeeze=False)[:, 0]
    styles = ["-", "--", ":", "-."]
    for ax, slot in zip(axes, slots):
        per_method: dict[str, int] = {}
        for method, label, t in traj:
            points = np.asarray(t.get(slot) or [], float).reshape(-1, 2)
            if len(points):
                k = per_method.setdefault(method, 0)
                per_method[method] += 1
                ax.plot(
                    points[:, 0],
                    points[:, 1],
                    styles[k % len(styles)],
                    color=colors.get(method, "k"),
                    alpha=max(0.35, 1 - 0.15 * k),
                    label=f"{method} {label}",
                )
        ax.set_ylabel(f"width of {slot}")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=6, ncol=2)
    axes[-1].set_xlabel("training step")
    axes[0].set_title(f"{group.key}: learned widths over training (seed {int(ok['seed'].min())})")
    return _png(fig)
