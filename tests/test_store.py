import pytest

from bench.store import ResultStore, StoreError


def _row(**kw):
    return {
        "task": "t",
        "method": "m",
        "seed": 0,
        "config_hash": "h",
        "status": "ok",
        "error": 0.1,
        "widths": {"a": 3},
        **kw,
    }


def test_finish_run_replaces_rows_and_sets_status_in_one_go(store_path):
    store = ResultStore(store_path)
    store.start_run("k", "t", "m", "h", 0)
    assert store.run_status("k") == "running"
    assert store.rows() == []  # nothing visible until the run finishes
    store.finish_run("k", [_row(candidate=0), _row(candidate=1)], "ok", None, 1.0)
    assert store.run_status("k") == "ok"
    assert [r["candidate"] for r in store.rows()] == [0, 1]
    assert store.rows()[0]["widths"] == {"a": 3}  # JSON round trip
    store.start_run("k", "t", "m", "h", 0)
    store.finish_run("k", [_row(candidate=0, error=0.2)], "ok", None, 1.0)
    assert [r["error"] for r in store.rows(run_key="k")] == [0.2]


def test_a_failing_write_leaves_the_previous_rows(store_path):
    store = ResultStore(store_path)
    store.start_run("k", "t", "m", "h", 0)
    store.finish_run("k", [_row()], "ok", None, 1.0)
    with pytest.raises(Exception):  # noqa: B017 - SQLAlchemy's error class differs by backend; any error will do
        store.finish_run("k", [_row(), {"task": None}], "ok", None, 1.0)  # second row violates NOT NULL
    assert len(store.rows()) == 1 and store.run_status("k") == "ok"


def test_filters_and_dataframe(store_path):
    store = ResultStore(store_path)
    for key, task, method in (("a", "t1", "m1"), ("b", "t1", "m2"), ("c", "t2", "m1")):
        store.start_run(key, task, method, "h", 0)
        store.finish_run(key, [_row(task=task, method=method)], "ok", None, 1.0)
    assert len(store.rows(task="t1")) == 2
    assert len(store.rows(task="t1", method="m1")) == 1
    df = store.dataframe(method="m1")
    assert sorted(df["task"]) == ["t1", "t2"] and "flops" in df.columns


def test_sqlite_store_uses_wal_and_keeps_models_beside_it(tmp_path):
    store = ResultStore(str(tmp_path / "sub" / "r.db"))
    with store.engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
    assert store.models_dir == tmp_path / "sub" / "r-models"


def test_sqlalchemy_urls_are_accepted(tmp_path):
    store = ResultStore(f"sqlite:///{tmp_path / 'u.db'}")
    assert store.rows() == [] and (tmp_path / "u.db").exists()


@pytest.mark.parametrize("bad", ["{tmp}/afile/r.db", "{tmp}", "nosuchdriver://x/y"])
def test_unusable_store_locations_raise_a_one_line_error(tmp_path, bad):
    (tmp_path / "afile").write_text("not a folder")
    with pytest.raises(StoreError) as err:
        ResultStore(bad.format(tmp=tmp_path))
    assert "\n" not in str(err.value)
