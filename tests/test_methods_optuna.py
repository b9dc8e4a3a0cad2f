"""optuna: a search through the CLI stores its Pareto front; a killed search resumes
without redoing finished trials; bad settings are rejected before training."""

import dataclasses

import optuna
import pytest
import torch

from bench.checkpoint import load_candidate
from bench.cli import main
from bench.config import TrainRecipe
from bench.context import run_context
from bench.contracts import RunContext
from bench.shared_state import SharedState
from bench.store import ResultStore
from methods.optuna_search import OptunaConfig, OptunaSearch, complete_trials, decode_state, open_study
from tasks.synthetic import SyntheticTask

SMOKE = ["--task", "synthetic", "--scale", "smoke", "--quiet", "--seed", "0", "--threads", "1"]


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.parametrize("sampler", ["nsga2", "tpe"])
def test_search_stores_pareto_front_with_search_cost(sampler, store_path):
    args = [
        "--method",
        "optuna",
        "--store",
        store_path,
        "--set",
        "train.steps=40",
        "--set",
        "method.trials=5",
        "--set",
        f"method.sampler={sampler}",
        "--set",
        "method.population=2",
    ]
    assert main(["run", *SMOKE, *args]) == 0
    store = ResultStore(store_path)
    rows = store.rows()
    assert rows and all(r["status"] == "ok" for r in rows)
    assert sorted(r["target_ratio"] for r in rows if r["target_ratio"]) == [0.125, 0.25, 0.5]
    for r in rows:
        if r["target_ratio"]:  # the best trial at or under each target: nothing cheaper enough is more accurate
            assert r["achieved_ratio"] <= r["target_ratio"] * 1.1
    front = sorted({(r["flops"], r["info"]["val_error"]) for r in rows})
    assert [e for _, e in front] == sorted([e for _, e in front], reverse=True)  # a Pareto front: cheaper is worse
    study = open_study(store.url, f"bench:{rows[0]['run_key']}")  # the study lives in the results database
    trials = complete_trials(study)
    assert trials[0].params == {"hidden": 64}  # the search starts from the full-width model
    assert len(trials) == 5 and rows[0]["info"]["trials_complete"] == 5
    total = sum(t.user_attrs["train_seconds"] for t in trials)
    for row in rows:
        assert row["search_seconds"] == pytest.approx(total) and 0 < row["train_seconds"] < total
        model, info = load_candidate(store.models_dir / row["model_path"])
        assert info["widths"] == row["widths"]
        x, y = SyntheticTask(scale="smoke")._data()["val"]
        assert torch.nn.functional.mse_loss(model(x), y).item() > 0
        assert SyntheticTask(scale="smoke").evaluate(model, "val").error == pytest.approx(
            row["info"]["val_error"], rel=1e-5
        )


def test_the_full_width_trial_is_the_shared_dense_model(store_path):
    """Not trained again: the baseline's candidate, with its training time as search cost."""
    args = [
        "--method",
        "baseline",
        "optuna",
        "--store",
        store_path,
        "--set",
        "train.steps=40",
        "--set",
        "optuna.trials=3",
        "--set",
        "optuna.population=2",
    ]
    assert main(["run", *SMOKE, *args]) == 0
    store = ResultStore(store_path)
    base, _check = store.rows(method="baseline")  # the dense model, and its convergence check
    first = complete_trials(open_study(store.url, f"bench:{store.rows(method='optuna')[0]['run_key']}"))[0]
    assert first.params == {"hidden": 64}
    dense, _ = load_candidate(store.models_dir / base["model_path"])
    state = decode_state(first.user_attrs["state_dict"])
    assert all(torch.equal(state[k], v) for k, v in dense.state_dict().items())
    assert first.user_attrs["train_seconds"] == pytest.approx(base["train_seconds"])


class Interrupting(RunContext):
    """A context whose training is killed (KeyboardInterrupt) at call number `kill_at`."""

    calls = 0
    kill_at = 0
    trained: list[int] = []

    def train(self, model, hooks=None, recipe=None, desc="train"):
        type(self).calls += 1
        last = desc.rsplit(" ", 1)[1]  # "synthetic/optuna trial N", or "synthetic dense training" (trial 0)
        type(self).trained.append(int(last) if last.isdigit() else 0)
        if type(self).calls == self.kill_at:
            raise KeyboardInterrupt
        return super().train(model, hooks, recipe, desc)


def interrupting(task, seed, recipe, url, run_key) -> Interrupting:
    base = run_context(task, seed, recipe, SharedState(url), progress=False, run_key=run_key)
    return Interrupting(**{f.name: getattr(base, f.name) for f in dataclasses.fields(base)})


def test_killed_search_resumes_without_redoing_finished_trials(tmp_path, monkeypatch):
    task = SyntheticTask(scale="smoke")
    recipe = TrainRecipe(steps=30, batch_size=64, lr=3e-3)
    url = f"sqlite:///{tmp_path / 'results.db'}"
    method = OptunaSearch(OptunaConfig(trials=5, population=2))
    Interrupting.calls, Interrupting.kill_at = 0, 3
    ctx = interrupting(task, 0, recipe, url, "synthetic/optuna/x/seed0")  # a new state: trial 0 is trained here
    with pytest.raises(KeyboardInterrupt):
        list(method.candidates(ctx))
    study = open_study(url, "bench:synthetic/optuna/x/seed0")
    before = {t.number: t.params for t in complete_trials(study)}
    (killed,) = [t for t in study.trials if t.state == optuna.trial.TrialState.FAIL]
    assert len(before) >= 2 and killed.number == len(study.trials) - 1

    Interrupting.calls, Interrupting.kill_at, Interrupting.trained = 0, -1, []  # the resumed search is not interrupted
    candidates = list(method.candidates(ctx))
    study = open_study(url, "bench:synthetic/optuna/x/seed0")
    after = complete_trials(study)
    assert len(after) == 5 and {t.number: t.params for t in after if t.number in before} == before
    # Only new trials were trained (the killed one again first, with its widths); a repeated proposal is not trained
    # twice.
    fresh = [t for t in after if t.number not in before and "duplicate_of" not in t.user_attrs]
    assert fresh[0].params == killed.params and fresh[0].user_attrs["retry_of"] == killed.number
    assert len(Interrupting.trained) == len(fresh) and min(t.number for t in fresh) > killed.number
    assert candidates and candidates[0].info["trials_this_process"] == 5 - len(before)
    distinct = {c.info["trial"]: c.train_seconds for c in candidates}  # a trial may be the candidate of several targets
    assert sum(distinct.values()) <= candidates[0].train_seconds + candidates[0].search_seconds

    Interrupting.calls = 0
    again = list(method.candidates(ctx))  # complete: nothing to train, same front
    assert Interrupting.calls == 0 and [c.widths for c in again] == [c.widths for c in candidates]

    # The same search never interrupted: the same trials (in search order) and the same front.
    clean_url = f"sqlite:///{tmp_path / 'clean.db'}"
    clean_ctx = run_context(task, 0, recipe, SharedState(clean_url), progress=False, run_key="synthetic/optuna/x/seed0")
    clean = list(method.candidates(clean_ctx))
    clean_trials = complete_trials(open_study(clean_url, "bench:synthetic/optuna/x/seed0"))
    assert [(t.params, t.values) for t in clean_trials] == [(t.params, t.values) for t in after]
    assert [(c.widths, c.info["val_error"]) for c in clean] == [(c.widths, c.info["val_error"]) for c in candidates]


def test_a_search_killed_with_a_running_trial_resumes_to_the_same_front(tmp_path):
    """kill -9 leaves a RUNNING trial: the resumed search redoes it in its place."""
    task = SyntheticTask(scale="smoke")
    recipe = TrainRecipe(steps=20, batch_size=64, lr=3e-3)
    method = OptunaSearch(OptunaConfig(trials=4, population=2))
    fronts = []
    for name, kill in (("clean", False), ("killed", True)):
        url = f"sqlite:///{tmp_path / name}.db"
        ctx = run_context(task, 3, recipe, SharedState(url), progress=False, run_key="r")
        if kill:
            study = open_study(url, "bench:r")
            method.prepare(study, task, 3)
            study.ask(method.space(task))  # the full-width trial, left RUNNING as a killed process leaves it
        list(method.candidates(ctx))
        study = open_study(url, "bench:r")
        fronts.append(sorted((tuple(t.params.values()), tuple(t.values)) for t in study.best_trials))
        assert len(complete_trials(study)) == 4
        assert not [t for t in study.trials if t.state == optuna.trial.TrialState.RUNNING]
    assert fronts[0] == fronts[1]


@pytest.mark.parametrize(
    "setting", ["method.trials=0", "method.sampler=random", "method.population=1", "method.slots=nope"]
)
def test_bad_settings_are_rejected_before_training(setting, store_path, capsys):
    assert main(["run", *SMOKE, "--method", "optuna", "--store", store_path, "--set", setting]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and setting.split("=")[0].split(".")[1] in err


def test_repeated_proposals_are_not_trained_again(tmp_path):
    task = SyntheticTask(SyntheticTask.Config(full_width=2), scale="smoke")  # only widths 1 and 2 exist
    Interrupting.calls, Interrupting.kill_at, Interrupting.trained = 0, -1, []
    ctx = interrupting(task, 0, TrainRecipe(steps=10, batch_size=64), f"sqlite:///{tmp_path / 'r.db'}", "dup")
    candidates = list(OptunaSearch(OptunaConfig(trials=5, population=2)).candidates(ctx))
    assert Interrupting.calls <= 2 and candidates[0].info["trials_complete"] == 5
    assert len({tuple(c.widths.items()) for c in candidates}) == len(candidates)


def test_opening_a_study_waits_out_another_process_creating_the_tables(tmp_path, monkeypatch):
    """Two parallel Optuna runs on a fresh store: the second to create Optuna's tables gets
    an IntegrityError on alembic_version (seen in the main job); it must retry, not fail."""
    import sqlalchemy as sa

    from methods import optuna_search

    real, calls = optuna_search.rdb_storage, []

    def racing(url):
        calls.append(url)
        if len(calls) == 1:
            raise sa.exc.IntegrityError(
                "INSERT INTO alembic_version", {}, Exception("UNIQUE constraint failed: alembic_version.version_num")
            )
        return real(url)

    monkeypatch.setattr(optuna_search, "rdb_storage", racing)
    monkeypatch.setattr(optuna_search.time, "sleep", lambda s: None)
    study = open_study(f"sqlite:///{tmp_path / 'r.db'}", "race")
    assert study.study_name == "race" and len(calls) == 2


def _open(args):
    url, name = args
    try:
        open_study(url, name)
        return "ok"
    except Exception as err:  # noqa: BLE001 - reported to the test
        return f"{type(err).__name__}: {err}"


def test_two_processes_open_studies_in_a_fresh_database_at_once(tmp_path):
    """The real race: without retries about half of these failed ("table studies already exists")."""
    import multiprocessing

    with multiprocessing.get_context("spawn").Pool(2) as pool:
        for round_ in range(4):
            url = f"sqlite:///{tmp_path / f'{round_}.db'}"
            assert pool.map(_open, [(url, "a"), (url, "b")]) == ["ok", "ok"]
