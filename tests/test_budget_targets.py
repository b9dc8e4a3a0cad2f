"""A fair comparison: every candidate trains for the same budget, every shrinking method is
asked for the same FLOP/s targets, and the headline table compares methods at each target."""

import json
import math

import numpy as np
import pandas as pd
import pytest

from bench.cli import main
from bench.registry import get_method_class
from bench.store import ResultStore
from methods.pruning.stepping import split_budget
from methods.structured import StructuredConfig
from reports import leaderboard as lb
from reports import targets as tg
from reports.groups import Group, load_frame, make_groups

SMOKE = ["--task", "synthetic", "--scale", "smoke", "--quiet", "--seed", "0"]
SHRINKING = ["magnitude", "structured", "optuna", "noise_injection", "stochastic_gates"]


@pytest.fixture(scope="module")
def default_rows(tmp_path_factory):
    store = str(tmp_path_factory.mktemp("budget") / "r.db")
    assert main(["run", *SMOKE, "--method", "baseline", *SHRINKING, "--jobs", "1", "--store", store]) == 0
    return store, ResultStore(store).rows()


def test_every_candidate_at_default_settings_trains_the_same_number_of_steps(default_rows):
    _, all_rows = default_rows
    rows = [r for r in all_rows if not r["info"].get("convergence_check")]
    steps = {r["method"]: r["train_steps"] for r in rows}
    budget = rows[0]["config"]["budget"]["train_steps"]
    assert set(steps) == {"baseline", *SHRINKING}
    assert {r["train_steps"] for r in rows} == {budget} and budget == rows[0]["config"]["train"]["steps"]
    (check,) = [r for r in all_rows if r["info"].get("convergence_check")]
    assert check["method"] == "baseline" and check["train_steps"] == 2 * budget
    assert "rule" in rows[0]["config"]["budget"]
    optuna = [r for r in rows if r["method"] == "optuna"]
    trained = optuna[0]["info"]["trials_trained"]
    assert trained > 1 and all(r["search_steps"] == trained * budget for r in optuna)  # the search's cost: every trial


def test_each_shrinking_method_has_a_candidate_per_default_target(default_rows):
    _, rows = default_rows
    for method in SHRINKING:
        got = sorted(r["target_ratio"] for r in rows if r["method"] == method and r["target_ratio"] is not None)
        assert got == [0.125, 0.25, 0.5], method
    for r in rows:
        if r["target_ratio"] is None:
            assert r["target_met"] is None
        else:
            assert r["target_met"] == (abs(r["achieved_ratio"] / r["target_ratio"] - 1) <= 0.1)
    pruned = [r for r in rows if r["method"] in ("magnitude", "structured")]
    assert all(r["target_met"] for r in pruned)  # pruning reaches its targets exactly
    assert [r["target_ratio"] for r in rows if r["method"] == "baseline"] == [None, None]


def test_results_json_rows_carry_the_budget_and_the_target(default_rows, capsys):
    store, _ = default_rows
    assert main(["results", "--format", "json", "--store", store]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert all("train_steps" in r and "target_ratio" in r and "target_met" in r for r in rows)


def test_results_table_prints_the_headline_table(default_rows, capsys):
    store, _ = default_rows
    assert main(["results", "--store", store]) == 0
    out = capsys.readouterr().out
    assert "at each FLOP/s target" in out and "best" in out and "magnitude *" in out
    assert "converged: dense error" in out or "WARNING: the dense model has not converged" in out


def test_targets_option_sets_every_method_and_a_methods_own_setting_wins(tmp_path):
    from bench.planning import plan_runs

    specs = plan_runs(
        ["synthetic"],
        ["magnitude", "structured", "optuna"],
        [0],
        "smoke",
        ["structured.ratios=0.3"],
        flop_targets=[0.4, 0.2],
    )
    by = {}
    for s in specs:
        by.setdefault(s.method, []).append(getattr(s.method_config, get_method_class(s.method).target_field))
    assert by["magnitude"] == [[0.4], [0.2]] and by["structured"] == [[0.3]] and by["optuna"] == [[0.4, 0.2]]


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--targets", "0"], "(0, 1]"),
        (["--targets", "1.5"], "(0, 1]"),
        (["--targets", "0.0001"], "under every method's floor"),
        (["--set", "structured.pretrain=0.9", "--set", "structured.step_finetune=0.1"], "must stay under 1"),
        (["--set", "train.steps=4"], "cannot hold pre-training"),
    ],
)
def test_impossible_budget_or_target_is_one_line_and_exit_2(argv, message, tmp_path, capsys, monkeypatch):
    import bench.training

    monkeypatch.setattr(bench.training, "train", lambda *a, **k: pytest.fail("trained before rejecting bad input"))
    store = str(tmp_path / "r.db")
    assert main(["run", *SMOKE, "--method", "structured", "magnitude", *argv, "--store", store]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0]


@pytest.mark.parametrize("total", [6, 20, 120, 481])
def test_pruning_budget_adds_up_to_the_run_budget(total):
    cfg = StructuredConfig()
    b = split_budget(cfg, total)
    assert b.pretrain + (cfg.steps - 1) * b.step + b.final == total and min(b.pretrain, b.step, b.final) >= 1


def _group(rows: list[dict]) -> Group:
    df = pd.DataFrame(rows)
    for col, default in (
        ("status", "ok"),
        ("reference", False),
        ("flops", 100.0),
        ("task", "t"),
        ("family", ""),
        ("label", ""),
        ("nonzero_flops", np.nan),
        ("metric", "eer"),
    ):
        if col not in df:
            df[col] = default
    df["nonzero_flops"] = df["nonzero_flops"].fillna(df["flops"])
    return Group(
        key="t",
        task="t",
        family="",
        rows=df,
        metric="eer",
        flops_unit="FLOP/s",
        dense_flops=100.0,
        dense_error={0: 1.0, 1: 1.0, 2: 1.0},
        dense_from_baseline=True,
        ref_error=50.0,
        ref_fixed=True,
        budget=10,
    )


def test_headline_table_picks_the_best_and_pairs_the_others_by_seed():
    rows = []
    for seed, (a, b) in enumerate([(5.0, 6.0), (7.0, 8.5), (6.0, 7.0)]):  # b is worse than a by 1, 1.5, 1
        rows.append({"method": "a", "seed": seed, "target_ratio": 0.5, "achieved_ratio": 0.5, "error": a})
        rows.append(
            {"method": "b", "seed": seed, "target_ratio": 0.5, "achieved_ratio": 0.3 if seed == 0 else 0.52, "error": b}
        )
    table = tg.target_table(_group(rows))
    a, b = table.set_index("method").loc["a"], table.set_index("method").loc["b"]
    assert a["best"] and not b["best"] and a["n"] == 3
    assert b["diff_mean"] == pytest.approx(7 / 6) and b["diff_lo"] > 0  # paired: seed-to-seed spread cancels
    unpaired_half = (b["error_hi"] - b["error_lo"]) / 2
    assert (b["diff_hi"] - b["diff_lo"]) / 2 < unpaired_half
    assert (b["under"], b["over"], a["under"]) == (1, 0, 0)
    shown, _ = tg.wide(table)
    assert list(shown.columns) == ["FLOP/s target", "best", "a", "b"]
    assert shown.loc[0, "best"] == "a" and shown.loc[0, "a"].endswith("best") and "↓1/3" in shown.loc[0, "b"]


def test_convergence_check_compares_the_dense_model_at_s_and_2s():
    def dense(budget, err):
        g = _group([{"method": "baseline", "seed": 0, "target_ratio": None, "achieved_ratio": 1.0, "error": err}])
        g.budget, g.dense_error, g.key = budget, {0: err}, f"t@{budget}"
        return g

    checks = lb.convergence([dense(100, 5.4), dense(200, 5.0), dense(400, 4.0)])
    assert checks["t@100"]["status"] == "converged"  # 5.4 <= 1.1 * 5.0
    assert checks["t@200"]["status"] == "not converged"  # 5.0 > 1.1 * 4.0
    assert checks["t@400"]["status"] == "not checked"
    assert math.isclose(checks["t@200"]["error_2s"], 4.0)


def test_scratch_retrains_each_found_shape_from_random_init_with_the_same_budget(default_rows, tmp_path):
    store, rows = default_rows
    assert main(["run", *SMOKE, "--method", "scratch", "--jobs", "1", "--store", store]) == 0
    scratch = [r for r in ResultStore(store).rows(method="scratch")]
    shapes = {
        json.dumps(r["widths"], sort_keys=True)
        for r in rows
        if r["method"] != "magnitude" and r["widths"] != {"hidden": 64}
    }
    assert {json.dumps(r["widths"], sort_keys=True) for r in scratch} == shapes
    assert all(r["train_steps"] == rows[0]["train_steps"] and r["target_ratio"] is None for r in scratch)
    assert not any(r["info"]["architecture_of"] == "magnitude" for r in scratch)  # magnitude keeps the dense shape
    assert all(r["error"] != r["info"]["source_error"] for r in scratch)  # trained anew, not copied
    (group,) = make_groups(load_frame(ResultStore(store)))
    control = tg.control_table(group)
    assert set(control["method"]) == set(SHRINKING) - {"magnitude"} and len(control) == len(scratch)


def test_scratch_is_not_in_all_and_starts_after_the_others():
    from bench.planning import plan_runs

    assert "scratch" not in {s.method for s in plan_runs(["synthetic"], ["all"], [0], "smoke")}
    assert get_method_class("scratch").runs_after_others


def test_the_default_suite_runs_its_share_and_says_what_it_leaves_out(tmp_path, capsys, monkeypatch):
    from bench.planning import left_out_of_default_suite, plan_runs

    default = {
        (s.task, getattr(s.task_config, "model", "")) for s in plan_runs(["default"], ["baseline"], [0], "smoke")
    }
    everything = {(s.task, getattr(s.task_config, "model", "")) for s in plan_runs(["all"], ["baseline"], [0], "smoke")}
    assert default < everything and {("synthetic", ""), ("antispoof", "")} <= default
    assert not any(task == "vad" for task, _ in default)  # its converged recipes do not fit the main job
    left = left_out_of_default_suite()
    assert any(t.startswith("vad (") and "converged" in t for t in left)  # and it says why
    assert {t.split(" ")[0] for t in left} == {t for t, _ in everything - default}  # each task once, families within
    import bench.runner

    monkeypatch.setattr(bench.runner, "run_all", lambda *a, **k: [])
    monkeypatch.setattr("bench.cli._write_report", lambda *a, **k: "none")
    assert (
        main(
            [
                "run",
                "--method",
                "baseline",
                "--seed",
                "0",
                "--scale",
                "smoke",
                "--quiet",
                "--store",
                str(tmp_path / "r.db"),
            ]
        )
        == 0
    )
    assert "the default task suite leaves out" in capsys.readouterr().err
