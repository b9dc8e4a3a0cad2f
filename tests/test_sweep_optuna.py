"""An optuna run in a Ray Tune sweep: the search's trials are Tune trials driven by Ray Tune's
OptunaSearch on the method's own study; the store gets the Pareto front; a restarted sweep
redoes no completed trial."""

import pytest
import torch

import bench.sweep as sweep_module
from bench.context import run_context
from bench.planning import plan_runs
from bench.runner import run_all
from bench.store import ResultStore
from bench.sweep import sweep
from methods.optuna_search import USER_ATTRS, complete_trials, open_study, run_trial

SETTINGS = ["train.steps=50", "method.trials=4", "method.population=2"]


@pytest.fixture(scope="module")
def ray_local():
    import ray

    yield
    ray.shutdown()


class Killed(BaseException):
    """The sweep process dies (not an error a sweep catches)."""


def _study(store, spec):
    return open_study(f"sqlite:///{store.sqlite_path.resolve()}", f"bench:{spec.run_key}")


def test_an_optuna_search_runs_as_tune_trials_and_resumes(tmp_path, ray_local):
    [spec] = plan_runs(["synthetic"], ["optuna"], [0], "smoke", SETTINGS)
    store = ResultStore(str(tmp_path / "results.db"))
    assert sweep([spec], store, num_cpus=2, cpus_per_trial=1, progress=False) == {"done": 1, "skipped": 0, "failed": 0}

    study = _study(store, spec)
    trials = complete_trials(study)
    assert len(trials) == 4 == len(study.trials)  # exactly the search's trials, all complete
    assert trials[0].params == {"hidden": 64}  # the method's full-width start trial
    for t in trials:
        assert "duplicate_of" in t.user_attrs or set(USER_ATTRS) <= set(t.user_attrs)
        assert len(t.values) == 2
    rows = store.rows(run_key=spec.run_key)
    assert rows and all(r["status"] == "ok" for r in rows) and store.run_status(spec.run_key) == "ok"
    assert all(
        r["info"]["trials_complete"] == 4 and r["info"]["trials_this_process"] == 0 for r in rows
    )  # execute trained nothing
    front = sorted(
        {(r["flops"], r["info"]["val_error"]) for r in rows if r["target_ratio"] is None}
    )  # the rest of the front
    assert [e for _, e in front] == sorted([e for _, e in front], reverse=True)
    assert all((store.models_dir / r["model_path"]).exists() for r in rows)
    total = sum(t.user_attrs["train_seconds"] for t in trials)
    assert all(r["search_seconds"] == pytest.approx(total) for r in rows)

    # A restarted sweep of a finished run does nothing.
    assert sweep([spec], store, num_cpus=2, progress=False) == {"done": 0, "skipped": 1, "failed": 0}
    assert len(_study(store, spec).trials) == 4


def _rows(store):
    return sorted(
        (
            r["task"],
            r["method"],
            r["seed"],
            r["label"],
            tuple(r["widths"].values()),
            r["flops"],
            r["params"],
            round(r["error"], 6),
            r["info"].get("val_error"),
        )
        for r in store.rows()
    )


@pytest.mark.parametrize(
    "task,extra", [("synthetic", ["train.steps=40"]), ("vad", ["task.model=crnn", "train.steps=6"])]
)
def test_a_sweep_stores_what_a_serial_run_stores_optuna_included(task, extra, tmp_path, ray_local):
    """Both call one objective; the full-width trial is the dense model the baseline shares."""
    specs = plan_runs([task], ["baseline", "optuna"], [0], "smoke", ["method.trials=3", "method.population=2", *extra])
    swept = ResultStore(str(tmp_path / "swept.db"))
    # Two CPUs per trial on a 2-CPU instance: one trial at a time, so each proposal sees the same finished trials.
    assert sweep(specs, swept, num_cpus=2, cpus_per_trial=2, progress=False) == {"done": 2, "skipped": 0, "failed": 0}
    serial = ResultStore(str(tmp_path / "serial.db"))
    threads = torch.get_num_threads()
    torch.set_num_threads(2)  # the trials' threads: the same arithmetic
    try:
        run_all(specs, serial, progress=False)
    finally:
        torch.set_num_threads(threads)
    assert _rows(swept) == _rows(serial) and len(_rows(serial)) >= 2
    dense = [r for r in swept.rows() if r["method"] == "baseline"][0]
    full = [r for r in swept.rows() if r["method"] == "optuna" and r["widths"] == dense["widths"]]
    assert not full or full[0]["error"] == dense["error"]  # the search's full-width trial is the shared dense model


def test_a_restarted_sweep_runs_only_the_missing_trials(tmp_path, ray_local, monkeypatch):
    [spec] = plan_runs(["synthetic"], ["optuna"], [1], "smoke", SETTINGS)
    store = ResultStore(str(tmp_path / "results.db"))
    real = sweep_module._search

    # A sweep killed after two trials: the study holds them, the store has no finished run.
    def two_trials(spec, store_url, *args):
        method = spec.build_method()
        study = open_study(store_url, f"bench:{spec.run_key}")
        method.prepare(study, spec.build_task(), spec.seed)
        ctx = run_context(spec.build_task(), spec.seed, spec.recipe, progress=False)
        for _ in range(2):
            trial = study.ask(method.space(spec.build_task()))
            out = run_trial(ctx, dict(trial.params), trial.number)
            for key in USER_ATTRS:
                trial.set_user_attr(key, out[key])
            study.tell(trial, (out["error"], out["flops"]))
        raise Killed

    monkeypatch.setattr(sweep_module, "_search", two_trials)
    with pytest.raises(Killed):
        sweep([spec], store, num_cpus=2, progress=False)
    before = {t.number: (t.params, t.values) for t in complete_trials(_study(store, spec))}
    assert len(before) == 2 and store.run_status(spec.run_key) != "ok"

    ran = []  # Tune trials each search call ran
    monkeypatch.setattr(sweep_module, "_search", lambda *args: ran.append(real(*args)))
    assert sweep([spec], store, num_cpus=2, progress=False) == {"done": 1, "skipped": 0, "failed": 0}
    study = _study(store, spec)
    after = complete_trials(study)
    assert ran == [2] and len(after) == 4 == len(study.trials)  # two Tune trials, no trial redone
    assert {t.number: (t.params, t.values) for t in after if t.number in before} == before
    rows = store.rows(run_key=spec.run_key)
    assert rows and all(r["status"] == "ok" and r["info"]["trials_this_process"] == 0 for r in rows)
