"""The report from a store filled with known rows: fronts, hypervolumes and iso-quality
figures against hand-computed values; files, failed rows, references and the CLI."""

import csv
import json
import math

import pandas as pd
import pytest

from bench.cli import main
from bench.store import ResultStore
from reports.groups import load_frame
from reports.report import build_report

L2, L4, L5 = math.log10(2), math.log10(4), math.log10(5)
VERSIONS = {"torch": "2.13.0+cpu", "python": "3.11.7"}
MACHINE = {"hostname": "box", "processor": "x86_64", "cpu_count": 2}


# What tasks declare of their metrics, stored with each row (reports read it from there).
METRIC_INFO = {
    "nmse": {"name": "nmse", "label": "NMSE", "chance": 1.0, "iso_tolerance": 0.005, "breakdowns": "output"},
    "eer": {
        "name": "eer",
        "label": "EER (%)",
        "unit": "%",
        "chance": 50.0,
        "iso_tolerance": 0.5,
        "breakdowns": "SNR range",
    },
}


def _row(
    task,
    method,
    seed,
    label,
    flops,
    error,
    *,
    metric="nmse",
    unit="FLOPs per example",
    family=None,
    nonzero=None,
    **extra,
):
    extra.setdefault("info", {"dense": True} if label == "dense" else {})
    return {
        "metric_info": METRIC_INFO[metric],
        "task": task,
        "method": method,
        "seed": seed,
        "config_hash": "h",
        "scale": "smoke",
        "label": label,
        "status": "ok",
        "widths": {"hidden": 8},
        "params": 10,
        "flops": flops,
        "nonzero_flops": flops if nonzero is None else nonzero,
        "flops_unit": unit,
        "uncounted_ops": [],
        "metric": metric,
        "error": error,
        "breakdowns": {},
        "secondary": {},
        "train_seconds": 1.0,
        "search_seconds": 1.0,
        "latency_ms": 0.1,
        "task_config": {"name": task, **({"model": family} if family else {})},
        "versions": VERSIONS,
        "git_rev": "abc123",
        "machine": MACHINE,
        **extra,
    }


def _put(store, rows, status="ok", reason=None):
    """One run per (task, family, method, seed, label), written as the runner writes it."""
    runs: dict[str, list] = {}
    for r in rows:
        key = f"{r['task']}-{r['task_config'].get('model', '')}/{r['method']}/{r['label']}/seed{r['seed']}"
        runs.setdefault(key, []).append(r)
    for key, rs in runs.items():
        store.start_run(key, rs[0]["task"], rs[0]["method"], "h", rs[0]["seed"])
        store.finish_run(key, rs, status, reason, 1.0)


SNR = {"snr_lt5": 12.0, "snr_5_15": 6.0, "snr_15_25": 3.0, "snr_ge25": 1.0}


@pytest.fixture(scope="module")
def known_store(tmp_path_factory):
    path = tmp_path_factory.mktemp("rep") / "results.db"
    store = ResultStore(str(path))
    syn = [
        _row("synthetic", "baseline", 0, "dense", 10000, 0.10),
        _row("synthetic", "baseline", 1, "dense", 10000, 0.12),
        # alpha, seed 0: (2000, .3) is dominated by (1000, .2); seed 1 has two points.
        *[
            _row("synthetic", "alpha", 0, f"k={f}", f, e, search_seconds=s)
            for f, e, s in [(100, 0.5, 10), (1000, 0.2, 20), (2000, 0.3, 30), (5000, 0.104, 40)]
        ],
        *[
            _row("synthetic", "alpha", 1, f"k={f}", f, e, search_seconds=s)
            for f, e, s in [(1000, 0.25, 5), (2500, 0.124, 7)]
        ],
        # unstructured sparsity: counted FLOPs stay dense, non-zero FLOPs are 5x fewer
        _row("synthetic", "magnitude", 0, "sparsity=0.8", 10000, 0.103, nonzero=2000),
    ]
    vad = [
        _row("vad", "baseline", 0, "dense", 1e6, 5.0, metric="eer", unit="FLOP/s", family="crnn", breakdowns=SNR),
        _row(
            "vad",
            "beta",
            0,
            "b=0.25",
            2.5e5,
            5.4,
            metric="eer",
            unit="FLOP/s",
            family="crnn",
            breakdowns={k: v + 1 for k, v in SNR.items()},
            info={"width_trajectory": {"mels": [[0, 80], [10, 60], [20, 41]]}},
        ),
        _row("vad", "beta", 0, "b=0.1", 1e5, 8.0, metric="eer", unit="FLOP/s", family="crnn", breakdowns=SNR),
        _row(
            "vad",
            "webrtcvad",
            0,
            "mode=3",
            0.0,
            20.0,
            metric="eer",
            unit="FLOP/s",
            family="crnn",
            uncounted_ops=["smallspeech::webrtcvad"],
            info={"reference": True},
        ),
        _row("vad", "baseline", 0, "dense", 4e6, 4.0, metric="eer", unit="FLOP/s", family="transformer"),
    ]
    _put(store, syn + vad)
    failed = {
        k: v
        for k, v in _row("vad", "beta", 1, "b=0.25", None, None, family="crnn").items()
        if k in ("task", "method", "seed", "label", "task_config", "config_hash")
    }
    _put(
        store,
        [{**failed, "status": "failed", "reason": "FloatingPointError: NaN loss"}],
        "failed",
        "FloatingPointError: NaN loss",
    )
    report = build_report(store, path.parent / "report")
    return store, report


def _board_row(report, group, method):
    rows = report.board[(report.board["group"] == group) & (report.board["method"] == method)]
    assert len(rows) == 1
    return rows.iloc[0]


def test_groups_split_by_task_and_model_family_with_their_dense_models(known_store):
    _, report = known_store
    groups = {g.key: g for g in report.groups}
    assert sorted(groups) == ["synthetic", "vad/crnn", "vad/transformer"]
    assert groups["synthetic"].dense_flops == 10000 and groups["synthetic"].dense_error == {0: 0.10, 1: 0.12}
    assert groups["vad/crnn"].dense_flops == 1e6 and groups["vad/transformer"].dense_flops == 4e6
    assert (groups["vad/crnn"].ref_error, groups["vad/crnn"].tolerance) == (50.0, 0.5)
    assert groups["vad/crnn"].uncounted_ops == [] and groups["vad/crnn"].reference_uncounted == [
        "smallspeech::webrtcvad"
    ]


def test_fronts_match_hand_computed(known_store):
    _, report = known_store
    fronts = pd.read_csv(report.out_dir / "fronts.csv")
    alpha0 = fronts[(fronts["method"] == "alpha") & (fronts["seed"] == 0)]
    assert alpha0["flops"].tolist() == [100, 1000, 5000] and alpha0["error"].tolist() == pytest.approx(
        [0.5, 0.2, 0.104]
    )
    beta = fronts[fronts["method"] == "beta"]
    assert beta["flops"].tolist() == [1e5, 2.5e5] and beta["label"].tolist() == ["b=0.1", "b=0.25"]


def test_hypervolumes_match_hand_computed(known_store):
    _, report = known_store
    seeds = pd.read_csv(report.out_dir / "seeds.csv").set_index(["group", "method", "seed"])
    # alpha seed 0: u = 1, .5, log10(2)/2 ; v = .5, .8, .896
    hv0 = (1 - 0.5) * 0.5 + (0.5 - L2 / 2) * 0.8 + (L2 / 2) * 0.896
    hv1 = (0.5 - L4 / 2) * 0.75 + (L4 / 2) * 0.876  # seed 1: u = .5, log10(4)/2 ; v = .75, .876
    assert seeds.loc[("synthetic", "alpha", 0), "hypervolume"] == pytest.approx(hv0)
    assert seeds.loc[("synthetic", "alpha", 1), "hypervolume"] == pytest.approx(hv1)
    alpha = _board_row(report, "synthetic", "alpha")
    assert alpha["hypervolume_mean"] == pytest.approx((hv0 + hv1) / 2) and alpha["hypervolume_n"] == 2
    assert alpha["hypervolume_hi"] - alpha["hypervolume_mean"] == pytest.approx(12.706 * abs(hv0 - hv1) / 2, rel=1e-6)
    assert _board_row(report, "synthetic", "baseline")["hypervolume_mean"] == 0.0
    # EER: v = 1 - EER / 50. beta: u = log10(4)/2 at 5.4 %, .5 at 8 %.
    beta = _board_row(report, "vad/crnn", "beta")
    assert beta["hypervolume_mean"] == pytest.approx((0.5 - L4 / 2) * (1 - 8 / 50) + (L4 / 2) * (1 - 5.4 / 50))
    mag = _board_row(report, "synthetic", "magnitude")
    assert mag["hypervolume_mean"] == 0.0 and mag["hypervolume_nonzero_mean"] == pytest.approx(L5 / 2 * 0.897)


def test_iso_quality_reductions_match_hand_computed(known_store):
    _, report = known_store
    alpha = _board_row(report, "synthetic", "alpha")
    # seed 0: dense .10 + .005 admits (5000, .104) -> 2x; seed 1: dense .12 admits (2500, .124) -> 4x
    assert (alpha["iso_reduction_mean"], alpha["iso_reduction_lo"]) == pytest.approx((3.0, 3.0 - 12.706))
    mag = _board_row(report, "synthetic", "magnitude")
    assert (
        mag["iso_reduction_mean"] == 1.0
        and mag["iso_reduction_nonzero_mean"] == pytest.approx(5.0)
        and mag["nonzero_flops_differ"]
    )
    assert _board_row(report, "vad/crnn", "beta")["iso_reduction_mean"] == pytest.approx(4.0)  # 5.4 <= 5.0 + 0.5
    # search cost per seed: sum over runs (one per setting) -> seed 0: 10+20+30+40, seed 1: 5+7
    assert alpha["search_seconds_mean"] == pytest.approx((100 + 12) / 2)


def test_leaderboard_has_one_row_per_task_family_method_with_references_and_failures(known_store):
    store, report = known_store
    board = report.board
    df = load_frame(store)
    # a reference (run once per task) also shows beside the task's other model families
    expected = set(zip(df["task"], df["family"], df["method"])) | {("vad", "transformer", "webrtcvad")}
    assert sorted(zip(board["task"], board["family"], board["method"])) == sorted(expected)
    assert board.loc[board["method"] == "webrtcvad", "kind"].tolist() == ["reference", "reference"]
    assert board[board["group"] == "vad/crnn"]["method"].tolist()[-1] == "webrtcvad"  # references sort last
    beta = _board_row(report, "vad/crnn", "beta")
    assert (beta["failed"], beta["candidates"], beta["seeds"]) == (1, 2, "0,1")
    failed = list(csv.DictReader(open(report.out_dir / "failed.csv")))
    assert [(f["method"], f["reason"]) for f in failed] == [("beta", "FloatingPointError: NaN loss")]


def test_report_files_and_html_content(known_store):
    _, report = known_store
    out = report.out_dir
    names = {p.name for p in report.figures}
    assert names == {
        "synthetic_tradeoff.png",
        "vad-crnn_tradeoff.png",
        "vad-transformer_tradeoff.png",
        "vad-crnn_breakdown.png",
        "vad-crnn_widths.png",
    }
    assert all(p.read_bytes()[:4] == b"\x89PNG" for p in report.figures)
    md = (out / "leaderboard.md").read_text()
    assert (
        "| synthetic | - | alpha |" in md
        and "3.00 ± 12.71x" in md
        and "5.00x; hypervolume 0.3135 *" in md
        and "webrtcvad [reference]" in md
    )
    assert "NaN loss" in md
    page = report.html_path.read_text()
    assert page.count('src="data:image/png;base64,') == 5 and "http://" not in page and "https://" not in page
    assert page.count('<tr class="reference" data-task="vad" data-model="crnn" data-method="webrtcvad">') == 1
    assert "FloatingPointError: NaN loss" in page and "smallspeech::webrtcvad" in page and "abc123" in page
    assert "FLOP/s" in page and "non-zero FLOP/s" in page
    breakdowns = pd.read_csv(out / "breakdowns.csv")
    b = breakdowns[(breakdowns["method"] == "beta") & (breakdowns["label"] == "b=0.25")].set_index("key")["mean"]
    assert b.to_dict() == {"snr_lt5": 13.0, "snr_5_15": 7.0, "snr_15_25": 4.0, "snr_ge25": 2.0}
    board = pd.read_csv(out / "leaderboard.csv")
    assert len(board) == 8 and json.loads(board.to_json(orient="records"))[0]["group"] == "synthetic"


def test_report_subcommand_writes_beside_the_store_and_to_out(known_store, tmp_path, capsys):
    store, _ = known_store
    assert main(["report", "--store", store.location, "--out", str(tmp_path / "r"), "--task", "vad"]) == 0
    assert f"leaderboard: {tmp_path / 'r' / 'leaderboard.html'}" in capsys.readouterr().out
    page = (tmp_path / "r" / "leaderboard.html").read_text()
    assert 'data-task="vad"' in page and 'data-task="synthetic"' not in page
    empty = tmp_path / "empty" / "results.db"
    ResultStore(str(empty))
    assert main(["report", "--store", str(empty)]) == 0  # an empty store still gives a page
    assert "No results in the store" in (empty.parent / "report" / "leaderboard.html").read_text()


def _chromium_or_skip():
    from reports.check_html import find_chromium

    if find_chromium() is None:
        pytest.skip("chromium is not installed: the browser check needs Debian's chromium (CI installs it in .ci/run)")


def test_leaderboard_opens_in_headless_chromium_cleanly(known_store, tmp_path):
    from reports.check_html import check_leaderboard, store_rows

    _chromium_or_skip()
    store, report = known_store
    shot = report.out_dir / "leaderboard.png"  # kept beside the report, to look at
    result = check_leaderboard(report.html_path, shot)
    assert result.problems(store_rows(store.location)) == []
    assert len(result.rows) == 8 and ("vad", "crnn", "webrtcvad") in result.rows
    assert result.screenshot.read_bytes()[:4] == b"\x89PNG"


def test_browser_check_catches_a_script_error(known_store, tmp_path):
    from reports.check_html import check_leaderboard

    _chromium_or_skip()
    _, report = known_store
    broken = tmp_path / "broken.html"
    broken.write_text(report.html_path.read_text().replace("</body>", "<script>notDefinedAnywhere();</script></body>"))
    problems = check_leaderboard(broken, None).problems(want_screenshot=False)
    assert any("notDefinedAnywhere" in p and p.startswith("inline script status") for p in problems)
    assert any(p.startswith("console message") and "Uncaught ReferenceError" in p for p in problems)


def test_a_group_whose_every_run_failed_is_listed_not_dropped(tmp_path):
    store = ResultStore(str(tmp_path / "results.db"))
    bad = {
        "task": "synthetic",
        "method": "baseline",
        "seed": 0,
        "config_hash": "h",
        "label": "dense",
        "status": "failed",
        "reason": "NonFiniteLossError: loss is nan",
        "task_config": {"name": "synthetic"},
    }
    _put(store, [bad], "failed", bad["reason"])
    report = build_report(store)
    assert report.html_path == tmp_path / "report" / "leaderboard.html"
    (row,) = report.board.itertuples()
    assert (row.method, row.candidates, row.failed) == ("baseline", 0, 1) and math.isnan(row.hypervolume_mean)
    page = report.html_path.read_text()
    assert "NonFiniteLossError: loss is nan" in page and 'data-method="baseline"' in page
