"""Faults and bad input: diverged training, bad recipes, read-only commands, one-line errors."""

import pytest
import torch

from bench.cli import main
from bench.runner import DivergedError, check_converged
from bench.store import ResultStore
from tasks.synthetic import SyntheticTask

SMOKE = ["--task", "synthetic", "--scale", "smoke", "--quiet"]


def test_a_diverged_run_is_stored_failed_and_the_command_exits_1(store_path, capsys):
    # lr=1e9 keeps every step's loss finite on this task but ends at NMSE ~1e11.
    argv = ["run", *SMOKE, "--method", "baseline", "--seed", "0", "--set", "train.lr=1e9", "--store", store_path]
    assert main(argv) == 1
    (row,) = ResultStore(store_path).rows()
    assert row["status"] == "failed" and "DivergedError" in row["reason"] and "worse than chance" in row["reason"]
    assert "\n" not in row["reason"]
    assert not (ResultStore(store_path).models_dir / row["run_key"]).exists()  # no model file of a failed run


def test_non_finite_weights_fail_the_run_even_at_a_chance_level_error():
    task = SyntheticTask(scale="smoke")
    model = task.build_model()
    check_converged(task, model, 0.5, "dense")  # finite weights, error under chance: fine
    with torch.no_grad():
        model[0].weight[0, 0] = float("inf")
    with pytest.raises(DivergedError, match="weights 0.weight became non-finite"):
        check_converged(task, model, 0.5, "dense")


@pytest.mark.parametrize(
    "setting,message",
    [
        ("train.steps=-5", "steps must be >= 1, got -5"),
        ("train.steps=0", "steps must be >= 1"),
        ("train.batch_size=0", "batch_size must be >= 1"),
        ("train.lr=nan", "lr must be a finite number > 0, got nan"),
        ("train.lr=-1", "lr must be a finite number > 0"),
        ("train.lr=inf", "lr must be a finite number > 0"),
        ("train.weight_decay=-5", "weight_decay must be a finite number >= 0"),
        ("train.grad_clip=-1", "grad_clip must be a finite number >= 0"),
        ("train.eval_batch_size=8", "unknown setting train.eval_batch_size"),
    ],
)
def test_bad_training_recipes_are_one_line_and_exit_2_before_any_training(setting, message, store_path, capsys):
    assert main(["run", *SMOKE, "--method", "baseline", "--set", setting, "--store", store_path]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and "\n" not in err
    assert ResultStore(store_path).rows() == []


# --- read-only commands never create or change a store --------------------------------------------------------------
def _snapshot(folder):
    return sorted((p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in folder.rglob("*"))


@pytest.mark.parametrize("command", [["results"], ["results", "--format", "json"], ["report"]])
def test_a_missing_store_is_one_line_and_nothing_is_created(command, tmp_path, capsys):
    typo = tmp_path / "typo.db"
    assert main([*command, "--store", str(typo)]) == 2
    err = capsys.readouterr().err.strip()
    assert f"no store at {typo}" in err and "\n" not in err
    assert list(tmp_path.iterdir()) == []


def test_results_and_report_leave_a_read_only_store_unchanged(store_path, tmp_path, capsys):
    assert main(["run", *SMOKE, "--method", "baseline", "--seed", "0", "--store", store_path]) == 0
    store_dir = tmp_path / "store"
    store_dir.mkdir()
    db = store_dir / "results.db"
    ResultStore(store_path).engine.dispose()
    import sqlite3

    with sqlite3.connect(store_path) as src, sqlite3.connect(db) as dst:  # a consolidated copy, no WAL files
        src.backup(dst)
    db.chmod(0o444)
    store_dir.chmod(0o555)
    try:
        before = _snapshot(store_dir)
        assert main(["results", "--store", str(db)]) == 0
        assert "synthetic" in capsys.readouterr().out
        assert main(["report", "--store", str(db), "--out", str(tmp_path / "rep")]) == 0
        assert (tmp_path / "rep" / "leaderboard.html").exists()
        assert _snapshot(store_dir) == before
    finally:
        store_dir.chmod(0o755)


def test_a_foreign_sqlite_file_is_refused_and_left_unchanged(tmp_path, capsys):
    import sqlite3

    foreign = tmp_path / "notes.db"
    with sqlite3.connect(foreign) as conn:
        conn.execute("CREATE TABLE notes (id INTEGER PRIMARY KEY, text TEXT)")
    before = foreign.read_bytes()
    for command in (["results"], ["report"], ["run", *SMOKE, "--method", "baseline", "--seed", "0"]):
        assert main([*command, "--store", str(foreign)]) == 2
        err = capsys.readouterr().err.strip()
        assert "is not a result store of this benchmark (it has tables notes but no results table)" in err
        assert "\n" not in err
    assert foreign.read_bytes() == before
    (tmp_path / "text.db").write_text("hello\n")
    assert main(["results", "--store", str(tmp_path / "text.db")]) == 2
    assert "file is not a database" in capsys.readouterr().err


def test_an_older_schema_store_is_one_line_before_any_training(tmp_path, capsys, monkeypatch):
    import sqlite3

    import bench.training

    old = tmp_path / "old.db"
    ResultStore(str(old)).engine.dispose()
    with sqlite3.connect(old) as conn:  # the results table as it was before the budget columns
        conn.execute("ALTER TABLE results DROP COLUMN target_met")
    monkeypatch.setattr(bench.training, "train", lambda *a, **k: pytest.fail("trained on a store it cannot write"))
    for command in (["results"], ["report"], ["run", *SMOKE, "--method", "baseline", "--seed", "0"]):
        assert main([*command, "--store", str(old)]) == 2
        err = capsys.readouterr().err.strip()
        assert "has an older schema (table results lacks target_met)" in err and "\n" not in err


def test_a_password_in_a_store_url_is_never_shown(capsys):
    url = "postgresql+nodriver://bench:s3cret@127.0.0.1:1/bench"
    assert main(["results", "--store", url]) == 2
    err = capsys.readouterr().err
    assert "s3cret" not in err and "bench:***@127.0.0.1" in err


def test_report_out_pointing_at_a_file_is_one_line(store_path, tmp_path, capsys):
    ResultStore(store_path)
    (tmp_path / "afile").write_text("")
    assert main(["report", "--store", store_path, "--out", str(tmp_path / "afile")]) == 2
    err = capsys.readouterr().err.strip()
    assert "--out" in err and "is a file" in err and "\n" not in err


def test_reports_of_stores_in_one_folder_go_to_their_own_folders(tmp_path, capsys):
    for name in ("a", "b"):
        ResultStore(str(tmp_path / f"{name}.db"))
        assert main(["report", "--store", str(tmp_path / f"{name}.db")]) == 0
    for name in ("a", "b"):
        assert (tmp_path / f"{name}-report" / "leaderboard.html").exists()


def test_an_unwritable_models_dir_is_found_before_training(store_path, tmp_path, capsys, monkeypatch):
    import bench.training

    (tmp_path / "afile").write_text("")  # a folder under a file cannot be made, even by root
    monkeypatch.setattr(bench.training, "train", lambda *a, **k: pytest.fail("trained with nowhere to save"))
    assert (
        main(
            [
                "run",
                *SMOKE,
                "--method",
                "baseline",
                "--seed",
                "0",
                "--store",
                store_path,
                "--models-dir",
                str(tmp_path / "afile" / "models"),
            ]
        )
        == 2
    )
    assert "cannot create models folder" in capsys.readouterr().err


# --- one line, not a traceback ----------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "argv,message",
    [
        (["sweep", *SMOKE, "--method", "baseline", "--num-cpus", "-1"], "--num-cpus must be >= 1"),
        (["sweep", *SMOKE, "--method", "baseline", "--num-cpus", "0"], "--num-cpus must be >= 1"),
        (["profile", "--task", "synthetic", "--widths", "hidden=abc"], "bad --widths 'hidden=abc'"),
        (["run", *SMOKE, "--method", "optuna", "--seed", "-1"], "seeds must be whole numbers >= 0, got -1"),
    ],
)
def test_bad_command_values_are_one_line_and_exit_2(argv, message, store_path, capsys):
    assert main([*argv, "--store", store_path] if argv[0] != "profile" else argv) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and "\n" not in err


@pytest.mark.parametrize("jobs", ["1", "2"])
def test_an_unwritable_data_cache_is_one_line_before_any_run(jobs, store_path, tmp_path, capsys, monkeypatch):
    (tmp_path / "afile").write_text("")
    monkeypatch.setenv("BENCH_CACHE", str(tmp_path / "afile" / "cache"))
    argv = [
        "run",
        "--task",
        "vad",
        "--method",
        "baseline",
        "--seed",
        "0",
        "1",
        "--scale",
        "smoke",
        "--quiet",
        "--set",
        "task.model=crnn",
        "--jobs",
        jobs,
        "--store",
        store_path,
    ]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert "cannot build the data of task vad" in err and "set BENCH_CACHE to a writable folder" in err
    assert ResultStore(store_path).rows() == []


def test_large_seeds_give_the_optuna_sampler_a_valid_seed():
    from methods.optuna_search import OptunaSearch, open_study

    method = OptunaSearch(OptunaSearch.Config(trials=2))
    study = open_study("sqlite:///:memory:", "s")
    method.prepare(study, SyntheticTask(scale="smoke"), 10**9)  # seed * 7919 is far above 2**32
    study.ask()
    study.ask()  # the second trial is the sampler's own proposal (the first is queued)


@pytest.mark.parametrize("content", [b"", b"RIFF\x00\x00not audio at all"], ids=["empty", "corrupt"])
def test_a_bonafide_dir_with_no_usable_recording_is_one_line_and_exit_2(content, store_path, tmp_path, capsys):
    (tmp_path / "rec").mkdir()
    (tmp_path / "rec" / "a.wav").write_bytes(content)
    argv = [
        "run",
        "--task",
        "antispoof",
        "--method",
        "baseline",
        "--seed",
        "0",
        "--scale",
        "smoke",
        "--quiet",
        "--set",
        f"task.bonafide_dir={tmp_path / 'rec'}",
        "--store",
        store_path,
    ]
    with pytest.warns(UserWarning, match="skipping recorded bona fide file"):
        assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert "no usable recorded bona fide audio among 1 files" in err.splitlines()[-1] and "Traceback" not in err
    assert ResultStore(store_path).rows() == []


# --- model files and progress output ---------------------------------------------------------------------------
def test_a_killed_writers_temporary_file_is_removed_and_models_are_readable_by_others(tmp_path):
    import os
    import socket
    import stat

    from bench.checkpoint import atomic_save

    host = socket.gethostname().replace(".", "-")
    stale = tmp_path / f".candidate0.pt.{host}.{2**22 + 77}.abc.tmp"  # its writer (no such pid) was killed mid-save
    stale.write_bytes(b"x" * 100)
    live = tmp_path / f".candidate1.pt.{host}.{os.getpid()}.abc.tmp"  # a save in progress in a live process
    live.write_bytes(b"y")
    old = os.umask(0o022)
    try:
        atomic_save({"a": torch.zeros(2)}, tmp_path / "candidate0.pt")
    finally:
        os.umask(old)
    assert not stale.exists() and live.exists()
    assert stat.S_IMODE((tmp_path / "candidate0.pt").stat().st_mode) == 0o644


def test_without_a_terminal_each_finished_run_is_one_line(store_path, capsys):
    assert (
        main(
            [
                "run",
                "--task",
                "synthetic",
                "--scale",
                "smoke",
                "--method",
                "baseline",
                "--seed",
                "0",
                "1",
                "--store",
                store_path,
            ]
        )
        == 0
    )
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("[")]
    assert len(lines) == 2 and lines[0].startswith("[1/2] synthetic/baseline seed 0 ") and lines[1].endswith(": done")
