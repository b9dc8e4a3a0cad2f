"""Every method on every task and model family it applies to, at smoke size, generated from
the registries: a new method or task is checked by the same contract without a test of its
own. Candidates are plain modules whose outputs keep the dense model's shape and hold no
NaN, they cost no more FLOPs than the dense model, and every row is written."""

import pytest
import torch

from bench import registry
from bench.checkpoint import load_candidate
from bench.complexity import measure
from bench.planning import plan_runs
from bench.runner import execute
from bench.store import ResultStore
from tasks.base import WidthMask

# Few steps and trials: the contract is about shapes and rows, not quality.
QUICK = ["train.steps=8", "optuna.trials=2", "optuna.population=2"]


def _pairs() -> list[tuple[str, str, str]]:
    out = []
    for task in registry.task_names():
        families = registry.get_task_class(task).model_families or ("",)
        for family in families:
            for method in registry.method_names():
                out.append((task, family, method))
    return out


# One store for the module: methods that build on others' candidates (the from-scratch
# control) find those of the methods before them in the registry's order.
@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return ResultStore(str(tmp_path_factory.mktemp("contract") / "r.db"))


@pytest.mark.parametrize("task, family, method", _pairs(), ids=lambda x: x or "-")
def test_method_on_task_keeps_the_contract(task, family, method, store, one_thread):
    settings = [s for s in QUICK if s.split(".")[0] in ("train", method)] + ([f"task.model={family}"] if family else [])
    cls = registry.get_method_class(method)
    probe = registry.get_task_class(task)(scale="smoke")
    if not cls().applies_to(probe):
        pytest.skip(f"{method} does not apply to {task}")
    specs = plan_runs([task], [method], [0], "smoke", settings)
    if not specs:
        pytest.skip(f"{method} plans no run on {task} {family} (e.g. a reference planned with another family)")
    for spec in specs:
        outcome = execute(spec, store, progress=False)
        assert outcome.status in ("done", "skipped"), outcome.reason
        rows = store.rows(run_key=spec.run_key)
        assert rows and all(r["status"] == "ok" for r in rows)
        task_obj = spec.build_task()
        example = task_obj.example_input()
        dense_model = task_obj.build_model().eval()
        with torch.no_grad():
            dense_shape = dense_model(example).shape
        per = 1.0 / task_obj.example_seconds if task_obj.example_seconds else 1.0
        dense_flops = measure(dense_model, example).flops * per
        for row in rows:
            if row["info"].get("reference"):
                assert row["model_path"] is None
                continue
            model, _ = load_candidate(store.models_dir / row["model_path"])
            assert not any(isinstance(m, WidthMask) and m.transform is not None for m in model.modules())  # plain
            with torch.no_grad():
                out = model.eval()(example)
            assert out.shape == dense_shape and torch.isfinite(out).all()
            assert row["flops"] <= dense_flops * (1 + 1e-9)
            assert row["config"]["budget"]["train_steps"] == spec.recipe.steps
