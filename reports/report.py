"""`python -m bench report`: every table, figure and the HTML leaderboard, from the store.

Writes into one folder (default: `report/` beside the store):

- `leaderboard.html`: the one self-contained page (open it anywhere, no network);
- `leaderboard.csv` (numbers: mean, 95 % bounds and n over seeds per figure) and
  `leaderboard.md` (the same for reading), `seeds.csv` (every figure per seed),
  `fronts.csv` (each method's Pareto front per seed), `breakdowns.csv`, `failed.csv`;
- `figures/<task>[-<model>]_{tradeoff,breakdown,widths}.png`.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from bench.complexity import format_count
from reports import aggregate as agg
from reports import html, plots
from reports import leaderboard as lb
from reports import targets as tg
from reports.groups import LATENCY_RUNTIME, Group, load_frame, make_groups, offline_seconds
from reports.tables import leaderboard_display, to_markdown


@dataclass
class Report:
    """Where the report went, and the tables it was built from (for callers and tests)."""

    out_dir: Path
    html_path: Path
    board: pd.DataFrame
    groups: list[Group]
    figures: list[Path]


def default_out_dir(store) -> Path:
    """`report/` beside the store (the folder that holds the SQLite file and its models)."""
    return Path(store.models_dir).parent / "report"


def build_report(store, out_dir: str | Path | None = None, tasks: Iterable[str] | None = None) -> Report:
    """Read `store` (a `bench.store.ResultStore`) and write every output of the report."""
    out = Path(out_dir) if out_dir else default_out_dir(store)
    fig_dir = out / "figures"
    fig_dir.mkdir(parents=True, exist_ok=True)
    df = load_frame(store, tasks)
    groups = make_groups(df) if not df.empty else []
    board = lb.leaderboard(groups)
    colors = plots.method_colors(sorted(set(df["method"])) if not df.empty else [])

    figures: list[Path] = []
    group_html = []
    for group in groups:
        pngs = {
            "tradeoff": plots.tradeoff_png(group, colors),
            "latency": plots.latency_png(group, colors),
            "breakdown": plots.breakdown_png(group, colors),
            "widths": plots.trajectory_png(group, colors),
        }
        for name, png in pngs.items():
            if png:
                path = fig_dir / f"{group.key.replace('/', '-')}_{name}.png"
                path.write_bytes(png)
                figures.append(path)
        group_html.append(_group_section(group, pngs))

    target_tables = {g.key: tg.target_table(g) for g in groups}
    checks = lb.convergence(groups)
    seeds = pd.concat([lb.seed_figures(g) for g in groups], ignore_index=True) if groups else pd.DataFrame()
    fronts = lb.fronts_table(groups)
    breakdowns = pd.concat([lb.breakdown_table(g) for g in groups], ignore_index=True) if groups else pd.DataFrame()
    failed = lb.failed_rows(df) if not df.empty else pd.DataFrame()
    long_targets = (
        pd.concat(list(target_tables.values()), ignore_index=True) if groups else pd.DataFrame(columns=tg.COLUMNS)
    )
    for name, table in (
        ("targets", long_targets),
        ("leaderboard", board),
        ("seeds", seeds),
        ("fronts", fronts),
        ("breakdowns", breakdowns),
        ("failed", failed),
    ):
        table.to_csv(out / f"{name}.csv", index=False)
    shown, keys = leaderboard_display(board) if not board.empty else (pd.DataFrame(), pd.DataFrame())
    md = "# Results\n\n" + headline_markdown(groups, target_tables, checks)
    md += "\n## Leaderboard (hypervolume, iso-quality cut)\n\n" + (
        to_markdown(shown) if not shown.empty else "No results in the store.\n"
    )
    if not failed.empty:
        md += "\n## Failed candidates\n\n" + to_markdown(failed)
    (out / "leaderboard.md").write_text(md)

    meta = lb.metadata(df) if not df.empty else {}
    sections = [
        _intro(store, meta),
        _headline_section(groups, target_tables, checks),
        _leaderboard_section(board, shown, keys),
        *group_html,
        _failed_section(failed),
        _meta_section(meta),
    ]
    html_path = out / "leaderboard.html"
    html_path.write_text(html.page("smallspeech-bench leaderboard", sections))
    return Report(out, html_path, board, groups, figures)


def convergence_note(check: dict | None) -> str:
    """One line on whether the group's dense model converged at its budget (empty if unknown)."""
    if not check:
        return ""
    if check["status"] == "not checked":
        return (
            f"Convergence not checked: no dense run at {2 * check['budget']} steps in the store "
            f"(benchmarks/convergence.py adds one)."
        )
    verdict = "converged" if check["status"] == "converged" else "WARNING: the dense model has not converged"
    return (
        f"{verdict}: dense error {check['error_s']:.4g} at {check['budget']} steps, {check['error_2s']:.4g} at "
        f"{2 * check['budget']} (seeds {', '.join(map(str, check['seeds']))}; converged = within 10 %)."
    )


def headline_title(g: Group) -> str:
    """The heading of a group's headline table: metric, budget and the dense model's error."""
    dense = f"{g.metric_label} {g.dense_error_mean:.4g}" if g.dense_from_baseline else "no dense model run"
    steps = f"{g.budget} training steps per candidate"
    return f"{g.key}: {g.metric_label} at each FLOP/s target ({steps}; dense model: {dense})"


def headline_markdown(groups: list[Group], tables: dict[str, pd.DataFrame], checks: dict[str, dict]) -> str:
    """The headline tables as Markdown, one per group that has targets."""
    parts = []
    for g in groups:
        shown, _ = tg.wide(tables[g.key])
        if shown.empty:
            continue
        parts.append(f"### {headline_title(g)}\n\n" + to_markdown(shown))
        note = convergence_note(checks.get(g.key))
        if note:
            parts.append(note + "\n")
        control = tg.control_table(g)
        if not control.empty:
            parts.append(f"#### {g.key}: found shape or found weights?\n\n{CONTROL_NOTE}\n\n" + to_markdown(control))
    if not parts:
        return "No candidate was asked for a FLOP/s target.\n"
    return "\n".join(parts) + "\n" + tg.LEGEND + "\n"


def _headline_section(groups: list[Group], tables: dict[str, pd.DataFrame], checks: dict[str, dict]) -> str:
    parts = [
        '<h2>At each FLOP/s target</h2><p class="note">Which method gives the lowest error at each FLOP/s target '
        f"(a fraction of the dense model's FLOP/s), for the same training budget. {html.esc(tg.LEGEND)}</p>"
    ]
    for g in groups:
        shown, keys = tg.wide(tables[g.key])
        if shown.empty:
            continue
        parts.append(f"<h3>{html.esc(headline_title(g))}</h3>")
        parts.append(html.table(shown, keys, table_id=f"targets-{g.key}"))
        note = convergence_note(checks.get(g.key))
        if note:
            cls = "warning" if "WARNING" in note else "note"
            parts.append(f'<p class="{cls}">{html.esc(note)}</p>')
        control = tg.control_table(g)
        if not control.empty:
            parts.append(
                f'<h4>Found shape or found weights?</h4><p class="note">{html.esc(CONTROL_NOTE)}</p>'
                + html.table(control)
            )
    return "\n".join(parts)


CONTROL_NOTE = (
    "Each candidate's shape trained again from random initialisation with the same budget: if the retrained "
    "model is as good, the method found a good shape; if it is worse (positive difference), the method's "
    "own weights carried the gain. Mean ± 95 % half-interval over seeds; the difference is paired by seed."
)


def _intro(store, meta: dict) -> str:
    n = meta.get("rows", 0)
    return (
        f'<p class="note">From store <code>{html.esc(store.location)}</code>: {n} row(s), '
        f"{meta.get('failed', 0)} failed. Figures are the mean ± the half-width of a 95 % Student-t interval over "
        "seeds.</p>"
        '<details><summary>How the figures are defined</summary><ul class="note">'
        "<li><b>hypervolume</b>: area dominated by a method's candidates in a fixed unit square: x = log10(dense "
        f"FLOP/s / FLOP/s) / {agg.DECADES:g} "
        f"(0 = dense, 1 = {10**agg.DECADES:g}x fewer), y = 1 - error / the metric's chance-level error (as its task "
        "declares it); reference point (0, 0). "
        "Comparable across runs; the dense model alone scores 0.</li>"
        "<li><b>FLOP/s cut at iso-quality</b>: the largest dense / candidate FLOP/s among candidates whose error is "
        "at most the dense "
        'error of the same seed + the task\'s iso-quality tolerance; "-" when none is.</li>'
        "<li><b>search cost</b>: per seed, all training a method spent to produce its candidates (per run, its largest "
        "<code>search_seconds</code>; summed over runs).</li>"
        "<li><b>*</b> non-zero FLOP/s: what unstructured sparsity would cost on hardware that "
        "skips zero "
        "weights; the counted FLOP/s of such models do not fall. Drawn dashed in the plots.</li>"
        '<li><span class="badge">reference</span> rows (outside models, e.g. a classic signal-processing '
        "detector) are shown for "
        "orientation, not as competing "
        "methods.</li>"
        "</ul></details>"
    )


def _leaderboard_section(board: pd.DataFrame, shown: pd.DataFrame, keys: pd.DataFrame) -> str:
    if board.empty:
        return (
            '<h2>Leaderboard</h2><p>No results in the store.</p><table id="leaderboard" '
            'class="sortable"><thead><tr><th>task</th><th>model</th><th>method</th></tr></thead><tbody></tbody></table>'
        )
    attrs = [
        {
            "class": "reference" if r.kind == "reference" else "method",
            "data-task": r.task,
            "data-model": r.family,
            "data-method": r.method,
        }
        for r in board.itertuples()
    ]
    return (
        '<h2>Leaderboard</h2><p class="note">One row per task, model family and method; click a header to sort.</p>'
        + html.table(shown, keys, table_id="leaderboard", row_attrs=attrs)
    )


def _group_section(group: Group, pngs: dict[str, bytes | None]) -> str:
    facts = {
        "FLOP/s unit": group.flops_unit or "-",
        "dense model": (
            f"{format_count(group.dense_flops)} {group.flops_unit}, {group.metric} {group.dense_error_mean:.4g} "
            "(mean over seeds)"
            if math.isfinite(group.dense_flops)
            else "-"
        )
        + ("" if group.dense_from_baseline else " - no dense model run: the largest candidate stands in"),
        "iso-quality tolerance": f"+{group.tolerance:.3g} {group.metric_unit or group.metric}".rstrip(),
        "hypervolume reference error": f"{group.ref_error:g}"
        + ("" if group.ref_fixed else " (no fixed reference for this metric: not comparable across runs)"),
        "operators not counted": ", ".join(group.uncounted_ops) or "none",
    }
    if group.reference_uncounted:
        facts["not counted in reference rows"] = (
            ", ".join(group.reference_uncounted) + " (their FLOP/s are unknown, not zero)"
        )
    parts = [
        f'<h2 id="{html.esc(group.key)}">{html.esc(group.key)}</h2>',
        html.definition_list(facts),
        html.image(pngs["tradeoff"], f"{group.key} trade-off"),
        html.image(pngs["latency"], f"{group.key} error against latency"),
    ]
    means = lb.label_means(group)
    if not means.empty:
        shown = pd.DataFrame(
            {
                "method": [m + (" [reference]" if r else "") for m, r in zip(means["method"], means["reference"])],
                "setting": means["label"],
                "seeds": means["seeds"],
                f"{group.flops_unit or 'FLOPs'}": [
                    format_count(f) if pd.notna(f) and f > 0 else "not counted" for f in means["flops"]
                ],
                "non-zero *": [
                    format_count(nz) + " *" if pd.notna(nz) and nz < f * (1 - 1e-6) else "-"
                    for nz, f in zip(means["nonzero_flops"], means["flops"])
                ],
                "cut": [
                    f"{group.dense_flops / f:.2f}x"
                    if pd.notna(f) and f > 0 and math.isfinite(group.dense_flops)
                    else "-"
                    for f in means["flops"]
                ],
                latency_header(group): [f"{x:.3g}" if pd.notna(x) else "-" for x in means["latency"]],
                "speed-up": [
                    f"{group.dense_latency / x:.2f}x"
                    if pd.notna(x) and x > 0 and math.isfinite(group.dense_latency)
                    else "-"
                    for x in means["latency"]
                ],
                group.metric or "error": [f"{e:.4g}" for e in means["error"]],
            }
        )
        keys = pd.DataFrame(
            {
                "method": means["method"],
                "setting": means["label"],
                "seeds": means["seeds"],
                shown.columns[3]: means["flops"],
                "non-zero *": means["nonzero_flops"],
                "cut": group.dense_flops / means["flops"],
                shown.columns[6]: means["latency"],
                "speed-up": group.dense_latency / means["latency"],
                shown.columns[8]: means["error"],
            }
        )
        parts.append(
            "<h3>Candidates (mean over seeds)</h3>"
            + html.table(shown, keys, row_attrs=[{"class": "reference" if r else "method"} for r in means["reference"]])
        )
    if pngs["breakdown"]:
        parts.append("<h3>Breakdowns</h3>" + html.image(pngs["breakdown"], f"{group.key} breakdowns"))
        bd = lb.breakdown_table(group)
        wide = bd.assign(
            cell=[
                agg.MeanCI(m, lo, hi, n).format("{:.3g}")
                for m, lo, hi, n in zip(bd["mean"], bd["lo"], bd["hi"], bd["n"])
            ]
        )
        wide = wide.pivot_table(
            index=["method", "label"], columns="key", values="cell", aggfunc="first", sort=False
        ).reset_index()
        parts.append(html.table(wide.fillna("-")))
    if pngs["widths"]:
        parts.append("<h3>Width trajectories</h3>" + html.image(pngs["widths"], f"{group.key} width trajectories"))
    return "\n".join(parts)


def latency_header(group: Group) -> str:
    seconds = offline_seconds(group.ok)
    return f"latency ms ({LATENCY_RUNTIME}, {seconds:g} s, 1 thread)" if seconds else "latency ms"


def _failed_section(failed: pd.DataFrame) -> str:
    if failed.empty:
        return "<h2>Failed candidates</h2><p>None.</p>"
    return (
        f'<h2>Failed candidates</h2><p class="note">{len(failed)} row(s) failed; they count in no figure.</p>'
        + html.table(failed, row_attrs=[{"class": "failed"}] * len(failed))
    )


def _meta_section(meta: dict) -> str:
    if not meta:
        return ""
    first, last = meta["dates"]
    facts = {
        "seeds": ", ".join(map(str, meta["seeds"])),
        "scales": ", ".join(meta["scales"]),
        "dates": f"{first} to {last}",
        "git revisions": ", ".join(meta["git_revisions"]) or "-",
        "machines": "; ".join(meta["machines"]) or "-",
    }
    facts.update({f"version: {k}": v for k, v in meta["versions"].items()})
    return "<h2>Run metadata</h2>" + html.definition_list(facts)
