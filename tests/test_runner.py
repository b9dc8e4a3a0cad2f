"""The run path: train, evaluate, measure, store; resume; failures stored, others go on."""

import json
import math
import subprocess
import sys

import pytest
import torch

import bench.training
from bench import registry
from bench.checkpoint import load_candidate
from bench.cli import main
from bench.store import ResultStore
from methods.base import Method
from tasks.synthetic import SyntheticTask

SMOKE = ["--task", "synthetic", "--scale", "smoke", "--quiet"]


def test_run_trains_stores_and_reruns_without_training(store_path, capsys, monkeypatch):
    assert main(["run", *SMOKE, "--method", "baseline", "--seed", "0", "--store", store_path]) == 0
    out = capsys.readouterr().out
    assert "1 run(s) done" in out and "synthetic" in out
    rows = ResultStore(store_path).rows()
    assert len(rows) == 2 and rows[1]["info"]["convergence_check"]  # the dense model, and the same at twice the budget
    assert rows[1]["train_steps"] == 2 * rows[0]["train_steps"]
    row = rows[0]
    assert row["status"] == "ok" and row["widths"] == {"hidden": 64}
    # 16->64 Linear, tanh, 64->4 Linear: MACs by hand.
    assert row["macs"] == 16 * 64 + 64 + 64 * 4 and row["flops"] == 2 * row["macs"]
    assert row["params"] == 16 * 64 + 64 + 64 * 4 + 4
    assert 0 < row["error"] < 0.5 and row["train_seconds"] > 0 and row["latency_ms"] > 0
    assert row["uncounted_ops"] == [] and row["git_rev"] and row["versions"]["torch"].startswith("2.")
    assert row["config"]["seed"] == 0 and row["config"]["train"]["steps"] > 0

    def no_training(*a, **k):
        raise AssertionError("a finished run was trained again")

    monkeypatch.setattr(bench.training, "train", no_training)
    assert main(["run", *SMOKE, "--method", "baseline", "--seed", "0", "--store", store_path]) == 0
    assert "0 run(s) done, 1 already done (skipped)" in capsys.readouterr().out
    assert len(ResultStore(store_path).rows()) == 2


def test_saved_candidate_rebuilds_with_one_call_and_scores_the_same(store_path):
    main(
        ["run", *SMOKE, "--method", "baseline", "--seed", "1", "--set", "method.widths=hidden=8", "--store", store_path]
    )
    store = ResultStore(store_path)
    row = store.rows()[0]
    model, info = load_candidate(store.models_dir / row["model_path"])
    assert info["widths"] == {"hidden": 8} and model[0].out_features == 8
    task = SyntheticTask(SyntheticTask.Config(**info["task_config"]), scale="smoke")
    assert task.evaluate(model).error == pytest.approx(row["error"], rel=1e-6)


def test_interrupted_run_is_redone_and_finished_ones_are_kept(store_path, monkeypatch):
    calls = []
    real_train = bench.training.train

    def interrupt_second_run(task, model, seed, *a, **k):
        calls.append(seed)
        if seed == 1:
            raise KeyboardInterrupt
        return real_train(task, model, seed, *a, **k)

    monkeypatch.setattr(bench.training, "train", interrupt_second_run)
    assert (
        main(
            [
                "run",
                *SMOKE,
                "--method",
                "baseline",
                "--set",
                "baseline.check_convergence=false",
                "--seed",
                "0",
                "1",
                "--store",
                store_path,
            ]
        )
        == 130
    )
    store = ResultStore(store_path)
    assert [r["seed"] for r in store.rows()] == [0]  # the killed run left no half-written row
    monkeypatch.setattr(bench.training, "train", real_train)
    assert (
        main(
            [
                "run",
                *SMOKE,
                "--method",
                "baseline",
                "--set",
                "baseline.check_convergence=false",
                "--seed",
                "0",
                "1",
                "--store",
                store_path,
            ]
        )
        == 0
    )
    assert sorted(r["seed"] for r in store.rows()) == [0, 1]


def test_nan_loss_is_stored_as_failed_with_its_reason(store_path, monkeypatch, capsys):
    monkeypatch.setattr(SyntheticTask, "loss", lambda self, model, batch: model(batch[0]).sum() * math.nan)
    assert main(["run", *SMOKE, "--method", "baseline", "--seed", "0", "--store", store_path]) == 1
    (row,) = ResultStore(store_path).rows()
    assert row["status"] == "failed" and "NonFiniteLossError" in row["reason"] and "nan" in row["reason"]
    assert "failed" in capsys.readouterr().out


class Broken(Method):
    name = "broken"
    description = "raises"
    Config = SyntheticTask.Config  # any dataclass

    def candidates(self, ctx):
        raise RuntimeError("boom\nsecond line")


def test_a_failing_method_does_not_stop_the_others(store_path, monkeypatch):
    monkeypatch.setitem(registry._METHODS, "broken", Broken)
    assert main(["run", *SMOKE, "--method", "broken", "baseline", "--seed", "0", "--store", store_path]) == 1
    rows = {r["method"]: r for r in ResultStore(store_path).rows()}
    assert rows["broken"]["status"] == "failed" and rows["broken"]["reason"] == "RuntimeError: boom"
    assert rows["baseline"]["status"] == "ok"
    # A failed run is retried next time; the finished one is not.
    monkeypatch.setattr(Broken, "candidates", lambda self, ctx: iter(()))
    main(["run", *SMOKE, "--method", "broken", "baseline", "--seed", "0", "--store", store_path])
    assert "broken" not in {r["method"] for r in ResultStore(store_path).rows()}


@pytest.mark.parametrize(
    "argv,message",
    [
        (["run", "--task", "nope"], f"unknown task 'nope'; choose from: {', '.join(registry.task_names())} (or all)"),
        (
            ["run", "--task", "synthetic", "--method", "nope"],
            f"unknown method 'nope'; choose from: {', '.join(registry.method_names())} (or all)",
        ),
        (["run", "--task", "synthetic", "--set", "task.nope=1"], "unknown setting task.nope"),
        (["run", "--task", "synthetic", "--set", "train.steps=many"], "bad value 'many' for steps"),
        (["run", "--task", "synthetic", "--set", "method.widths=hidden=0"], "must be an integer in [1, 64]"),
        (["run", "--task", "synthetic", "--set", "method.widths=nope=3"], "unknown width slot 'nope'"),
        (["run", "--task", "synthetic", "--set", "task.teacher_width=0"], "teacher_width must be >= 1"),
        (["profile", "--task", "nope"], "unknown task"),
    ],
)
def test_bad_input_is_one_line_and_exit_code_2(argv, message, store_path, capsys):
    assert main([*argv, "--store", store_path] if argv[0] == "run" else argv) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and "\n" not in err
    assert ResultStore(store_path).rows() == []


def test_unwritable_store_is_a_clear_error(tmp_path, capsys):
    (tmp_path / "afile").write_text("")
    assert main(["run", *SMOKE, "--method", "baseline", "--store", str(tmp_path / "afile" / "r.db")]) == 2
    assert "cannot create store folder" in capsys.readouterr().err


def test_results_json_and_csv(store_path, capsys):
    main(
        [
            "run",
            *SMOKE,
            "--method",
            "baseline",
            "--set",
            "baseline.check_convergence=false",
            "--seed",
            "0",
            "--store",
            store_path,
        ]
    )
    capsys.readouterr()
    assert (
        main(["results", "--format", "json", "--task", "synthetic", "--method", "baseline", "--store", store_path]) == 0
    )
    (row,) = json.loads(capsys.readouterr().out)
    for key in ("task", "method", "seed", "status", "widths", "params", "flops", "error", "breakdowns", "metric"):
        assert key in row
    assert set(row["breakdowns"]) == {"output_0", "output_1", "output_2", "output_3"}
    assert main(["results", "--format", "csv", "--method", "other", "--store", store_path]) == 0
    assert capsys.readouterr().out.splitlines()[0].startswith("id,run_key,task,method")


def test_task_setting_changes_the_run_key(store_path):
    main(
        [
            "run",
            *SMOKE,
            "--method",
            "baseline",
            "--set",
            "baseline.check_convergence=false",
            "--seed",
            "0",
            "--set",
            "train.steps=50",
            "--store",
            store_path,
        ]
    )
    main(
        [
            "run",
            *SMOKE,
            "--method",
            "baseline",
            "--set",
            "baseline.check_convergence=false",
            "--seed",
            "0",
            "--set",
            "train.steps=50",
            "--set",
            "task.teacher_width=24",
            "--store",
            store_path,
        ]
    )
    rows = ResultStore(store_path).rows()
    assert len({r["config_hash"] for r in rows}) == 2
    assert [r["task_config"]["teacher_width"] for r in rows] == [12, 24]


def test_profile_prints_a_per_layer_table(capsys):
    assert main(["profile", "--task", "synthetic", "--widths", "hidden=8"]) == 0
    out = capsys.readouterr().out
    assert "FLOPs = 2 x MACs" in out and "Linear" in out and "uncounted operators: none" in out
    assert f"{2 * (16 * 8 + 8 + 8 * 4):,} FLOPs per example" in out


def test_module_entry_point_runs():
    proc = subprocess.run([sys.executable, "-m", "bench", "--help"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and "run" in proc.stdout and "results" in proc.stdout


def test_narrower_than_teacher_fits_worse():
    """The synthetic task's premise: below the teacher's width the error rises."""
    task = SyntheticTask(scale="smoke")
    errors = {}
    for width in (3, 64):
        torch.manual_seed(0)
        model = task.build_model({"hidden": width})
        bench.training.train(task, model, seed=0, progress=False)
        errors[width] = task.evaluate(model).error
    assert errors[3] > 1.5 * errors[64]


class OnlyElsewhere(Method):
    description = "applies to no task here"
    Config = SyntheticTask.Config

    def applies_to(self, task):
        return False


def test_methods_that_do_not_apply_are_left_out_of_all_and_rejected_by_name(store_path, monkeypatch):
    from bench.config import ConfigError
    from bench.planning import plan_runs

    monkeypatch.setitem(registry._METHODS, "elsewhere", OnlyElsewhere)
    specs = plan_runs(["synthetic"], ["all"], [0], "smoke")
    applies = {n for n, cls in registry._METHODS.items() if cls.in_all and cls().applies_to(specs[0].build_task())}
    assert "elsewhere" not in applies and {s.method for s in specs} == applies
    with pytest.raises(ConfigError, match="method elsewhere does not apply to task synthetic"):
        plan_runs(["synthetic"], ["elsewhere"], [0], "smoke")


def test_a_task_with_several_model_families_runs_each_unless_one_is_chosen():
    from bench.planning import plan_runs

    families = registry.get_task_class("vad").model_families
    assert len(families) >= 2
    specs = plan_runs(["vad"], ["baseline"], [0], "smoke")
    assert [s.task_config.model for s in specs] == list(families)
    assert len({s.run_key for s in specs}) == len(families)
    chosen = plan_runs(["vad"], ["baseline"], [0], "smoke", ["task.model=transformer"])
    assert [s.task_config.model for s in chosen] == ["transformer"]


def test_parallel_jobs_store_the_same_rows_as_one_process(tmp_path, capsys):
    grid = [
        "--method",
        "baseline",
        "magnitude",
        "--seed",
        "0",
        "1",
        "--set",
        "magnitude.ratios=0.5",
        "--set",
        "train.steps=200",
        "--set",
        "baseline.check_convergence=false",
    ]
    serial, parallel = str(tmp_path / "serial.db"), str(tmp_path / "parallel.db")
    assert main(["run", *SMOKE, *grid, "--store", serial, "--jobs", "1"]) == 0
    assert main(["run", *SMOKE, *grid, "--store", parallel, "--jobs", "2"]) == 0
    assert "4 run(s) done" in capsys.readouterr().out

    def metrics(path):
        return sorted(
            (r["method"], r["seed"], r["label"], r["error"], r["nonzero_flops"]) for r in ResultStore(path).rows()
        )

    assert metrics(serial) == metrics(parallel)
    # per seed, the baseline's dense model and pruning's pre-trained one were each trained once and saved
    assert len(list((tmp_path / "parallel-models" / "pretrained").glob("*.pt"))) == 4


def test_a_second_pruning_run_loads_the_saved_dense_model(store_path, monkeypatch):
    grid = ["--method", "magnitude", "--seed", "0", "--set", "train.steps=100"]
    assert main(["run", *SMOKE, *grid, "--set", "magnitude.ratios=0.5", "--store", store_path]) == 0
    # a new command, so a new state: only the file is left
    trained = []
    real_train = bench.training.train
    monkeypatch.setattr(
        bench.training, "train", lambda *a, desc="", **k: trained.append(desc) or real_train(*a, desc=desc, **k)
    )
    assert main(["run", *SMOKE, *grid, "--set", "magnitude.ratios=0.25", "--store", store_path]) == 0
    assert trained and not any("dense training" in d for d in trained)
    first, second = sorted(ResultStore(store_path).rows(), key=lambda r: -r["target_ratio"])
    assert first["search_seconds"] - first["train_seconds"] >= 0 and second["search_seconds"] > second["train_seconds"]


@pytest.mark.parametrize(
    "argv,message",
    [
        (["--jobs", "0"], "--jobs (or BENCH_JOBS) must be >= 1, got 0"),
        (["--threads", "0"], "--threads must be >= 1, got 0"),
    ],
)
def test_bad_jobs_or_threads_is_one_line(argv, message, store_path, capsys):
    assert main(["run", *SMOKE, "--method", "baseline", *argv, "--store", store_path]) == 2
    assert message in capsys.readouterr().err


def test_batch_indexed_loader_gives_the_same_batches_and_reshuffles_each_epoch():
    import numpy as np
    from torch.utils.data import DataLoader, TensorDataset

    from bench.training import _forever, _loader
    from tasks.speech.datasets import AudioDataset

    datasets = [
        TensorDataset(torch.randn(20, 3), torch.randn(20)),
        AudioDataset(np.arange(20 * 6, dtype=np.int16).reshape(20, 6), np.arange(20, dtype=np.float32)),
    ]
    for ds in datasets:
        item_by_item = DataLoader(
            ds, batch_size=4, shuffle=True, drop_last=True, generator=torch.Generator().manual_seed(3)
        )
        batched = _loader(ds, 4, torch.Generator().manual_seed(3))
        assert batched.batch_size is None  # indexed once per batch
        for x, y in zip(item_by_item, batched):
            assert all(torch.equal(a, b) for a, b in zip(x, y))
    stream = _forever(_loader(datasets[1], 5, torch.Generator().manual_seed(0)))
    epochs = [[next(stream)[1].tolist() for _ in range(4)] for _ in range(2)]
    assert sorted(sum(epochs[0], [])) == list(range(20))  # each epoch sees every example once
    assert epochs[0] != epochs[1]  # and in a new order


def test_both_pruning_methods_start_from_one_pre_trained_model_of_half_the_budget(store_path, monkeypatch):
    grid = ["--seed", "0", "--set", "train.steps=100", "--store", store_path]
    trained = []
    real_train = bench.training.train
    monkeypatch.setattr(
        bench.training, "train", lambda *a, desc="", **k: trained.append(desc) or real_train(*a, desc=desc, **k)
    )
    assert main(["run", *SMOKE, "--method", "magnitude", "--set", "magnitude.ratios=0.5", *grid]) == 0
    assert [d for d in trained if "dense training" in d] == ["synthetic dense training (50 steps)"]
    trained.clear()
    assert main(["run", *SMOKE, "--method", "structured", "--set", "structured.ratios=0.5", *grid]) == 0
    assert not any("dense training" in d for d in trained)  # loaded, not trained again
    for row in ResultStore(store_path).rows():
        assert row["train_steps"] == 100 and row["info"]["budget_split"]["pretrain"] == 50


def test_parallel_jobs_start_the_searches_first_then_the_rest_in_plan_order(store_path, monkeypatch):
    """An Optuna run trains many models: submitted last, it would leave one core idle at the end."""
    import concurrent.futures

    from bench.planning import plan_runs
    from bench.runner import RunOutcome, run_all

    submitted = []

    class Recording:
        def __init__(self, *args, **kwargs):
            pass

        def submit(self, fn, spec):
            submitted.append(spec)
            future = concurrent.futures.Future()
            future.set_result(RunOutcome(spec, "done", []))
            return future

        def shutdown(self, *args, **kwargs):
            pass

    monkeypatch.setattr(concurrent.futures, "ProcessPoolExecutor", Recording)
    specs = plan_runs(
        ["synthetic"], ["baseline", "noise_injection", "structured", "optuna"], seeds=[0, 1], scale="smoke"
    )
    assert specs[0].method == "baseline"  # planned in the order asked
    run_all(specs, ResultStore(store_path), progress=False, jobs=2)
    methods = [s.method for s in submitted]
    assert methods[:2] == ["optuna", "optuna"] and sorted(methods) == sorted(s.method for s in specs)
    # The rest keep their planned order.
    targets = [s.method_config.target[0] for s in submitted if s.method == "noise_injection"]
    assert targets == [0.5, 0.5, 0.25, 0.25, 0.125, 0.125]


def test_a_reference_runs_once_per_seed_whatever_the_family_and_keeps_no_model_file(store_path):
    from bench.planning import plan_runs

    specs = plan_runs(["vad"], ["webrtcvad", "baseline"], [0, 1], "smoke")
    assert sorted((s.method, s.seed) for s in specs if s.method == "webrtcvad") == [("webrtcvad", 0), ("webrtcvad", 1)]
    assert len([s for s in specs if s.method == "baseline"]) == 4  # a model per family and seed
    assert (
        main(
            [
                "run",
                "--task",
                "vad",
                "--method",
                "webrtcvad",
                "--seed",
                "0",
                "--scale",
                "smoke",
                "--quiet",
                "--store",
                store_path,
            ]
        )
        == 0
    )
    (row,) = ResultStore(store_path).rows()
    assert row["info"]["reference"] and row["model_path"] is None and row["status"] == "ok"
