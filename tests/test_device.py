"""`--device`: parsing, one-line errors without CUDA, and the device carried through training and evaluation."""

import pytest
import torch

import bench.training
from bench.cli import main
from bench.config import ConfigError, TrainRecipe
from bench.context import run_context
from bench.device import ENV, default_device, model_device, resolve_device, to_device, use_device
from tests.conftest import make_task

NO_CUDA = not torch.cuda.is_available()


def test_auto_and_cpu_resolve_on_a_machine_without_cuda():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device(" AUTO ") == torch.device("cuda" if torch.cuda.is_available() else "cpu")


@pytest.mark.parametrize(
    "spec,message",
    [
        ("gpu", "use auto, cpu, cuda or cuda:N"),
        ("cuda:x", "use auto, cpu, cuda or cuda:N"),
        ("cpu:0", "use auto, cpu, cuda or cuda:N"),
    ],
)
def test_a_spec_that_is_no_device_is_refused(spec, message):
    with pytest.raises(ConfigError, match=message):
        resolve_device(spec)


@pytest.mark.skipif(not NO_CUDA, reason="this machine has CUDA")
@pytest.mark.parametrize("spec", ["cuda", "cuda:1"])
def test_cuda_without_cuda_is_one_line_and_exit_2(spec, store_path, capsys, monkeypatch):
    monkeypatch.delenv(ENV, raising=False)
    argv = [
        "run",
        "--task",
        "synthetic",
        "--method",
        "baseline",
        "--seed",
        "0",
        "--scale",
        "smoke",
        "--quiet",
        "--store",
        store_path,
    ]
    assert main([*argv, "--device", spec]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "CUDA is not available" in err[0] and "--device cpu" in err[0]
    assert main(["sweep", *argv[1:], "--device", spec]) == 2  # checked before Ray starts


def test_the_chosen_device_reaches_workers_through_the_environment(monkeypatch):
    monkeypatch.delenv(ENV, raising=False)
    assert default_device() == torch.device("cpu")
    use_device("cpu")
    assert default_device() == torch.device("cpu") and run_context(None, 0, None).device == torch.device("cpu")


def test_to_device_moves_nested_tensors_and_leaves_the_rest():
    batch = {"x": (torch.zeros(2), [torch.ones(1, dtype=torch.int16)]), "name": "a"}
    moved = to_device(batch, torch.device("meta"))
    assert moved["x"][0].device.type == "meta" and moved["x"][1][0].dtype == torch.int16 and moved["name"] == "a"
    assert isinstance(moved["x"], tuple) and isinstance(moved["x"][1], list)


def test_training_takes_its_device_from_the_context_and_moves_every_batch(monkeypatch, one_thread):
    task = make_task("synthetic", {})
    seen = []
    real = bench.training.to_device

    def spy(batch, device):
        seen.append(device)
        return real(batch, device)

    monkeypatch.setattr(bench.training, "to_device", spy)
    recipe = TrainRecipe(steps=3, batch_size=8, lr=1e-3)
    ctx = run_context(task, 0, recipe, progress=False, device=torch.device("cpu"))
    model = task.build_model()
    ctx.train(model)
    assert seen == [torch.device("cpu")] * 3 and model_device(model) == torch.device("cpu")
    assert task.evaluate(model).error > 0  # evaluation reads the model's device
