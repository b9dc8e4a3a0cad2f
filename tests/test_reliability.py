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
    assert main(["run", *SMOKE, "--method", "baseline", "--seed", "0", "--set", "train.lr=1e9", "--store", store_path]) == 1
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


@pytest.mark.parametrize("setting,message", [
    ("train.steps=-5", "steps must be >= 1, got -5"),
    ("train.steps=0", "steps must be >= 1"),
    ("train.batch_size=0", "batch_size must be >= 1"),
    ("train.lr=nan", "lr must be a finite number > 0, got nan"),
    ("train.lr=-1", "lr must be a finite number > 0"),
    ("train.lr=inf", "lr must be a finite number > 0"),
    ("train.weight_decay=-5", "weight_decay must be a finite number >= 0"),
    ("train.grad_clip=-1", "grad_clip must be a finite number >= 0"),
    ("train.eval_batch_size=8", "unknown setting train.eval_batch_size"),
])
def test_bad_training_recipes_are_one_line_and_exit_2_before_any_training(setting, message, store_path, capsys):
    assert main(["run", *SMOKE, "--method", "baseline", "--set", setting, "--store", store_path]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and "\n" not in err
    assert ResultStore(store_path).rows() == []
