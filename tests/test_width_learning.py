"""Width learners: their optimiser group, noise once per slot, gates that saturate, presets."""

import math

import pytest
import torch
from conftest import make_task

from bench.cli import main
from bench.training import SCHEDULES
from methods.dynamic.boundary_mix import BoundaryMix
from methods.dynamic.flops_model import FlopsModel
from methods.dynamic.layout import consolidate, unmask_weights
from methods.dynamic.live_weights import NARROW_SHARE
from methods.dynamic.presets import preset_slots
from methods.noise_injection import NoiseInjection, NoiseInjectionConfig, NoiseInjectionController
from methods.stochastic_gates import GateController, StochasticGatesConfig
from tasks.base import width_masks


def test_width_parameters_keep_their_own_rate_tied_to_the_recipe_length():
    task = make_task("synthetic", {})
    flops = FlopsModel.for_task(task, ["hidden"])
    for steps in (120, 480):
        controller = NoiseInjectionController(task, ["hidden"], flops, NoiseInjectionConfig(), target=0.25, steps=steps)
        weights, widths = controller.parameters(task.build_model())
        assert widths["weight_decay"] == 0.0 and widths["schedule"] == "hold_cosine" and "schedule" not in weights
        assert widths["lr"] * steps == pytest.approx(4.0)  # the range [0, 1] in a quarter of the recipe
    hold = SCHEDULES["hold_cosine"]
    assert [hold(s, 100) for s in (0, 25, 50)] == [1.0, 1.0, 1.0]
    assert hold(75, 100) == pytest.approx(0.5) and hold(100, 100) == 0.0
    assert SCHEDULES["cosine"](50, 100) == pytest.approx(0.5)


def _transformer_controller(mode: str, lam: float = 0.5):
    task = make_task("vad", {"model": "transformer"})
    slots = list(task.width_slots())
    config = NoiseInjectionConfig(slot_noise=mode)
    controller = NoiseInjectionController(task, slots, FlopsModel.for_task(task, slots), config, kappa_min=0.01)
    model = task.build_model()
    controller.bind(model)
    k = task.width_slots()["n_mels"] // 2
    with torch.no_grad():
        controller.kappa["n_mels"].fill_((k + lam) / task.width_slots()["n_mels"])
    return task, controller, model, k


def _boundary_noise_at_each_mask(mode: str, lam: float = 0.5) -> list[torch.Tensor | None]:
    """The unit noise nu each n_mels mask added to the boundary feature, (batch, frames),
    recovered from its input and output: out = sqrt(lam) in + sqrt(1 - lam) sigma nu."""
    task, controller, model, k = _transformer_controller(mode, lam)
    found = []

    def record(mask, args, out):
        x = args[0].narrow(mask.dim, k, 1)
        sigma = x.float().std(unbiased=False)
        noise = (out.narrow(mask.dim, k, 1) - math.sqrt(lam) * x) / (math.sqrt(1 - lam) * sigma)
        unmixed = torch.equal(out.narrow(mask.dim, k, 1), x)
        found.append(None if unmixed else noise.movedim(mask.dim, -1).flatten())

    masks = width_masks(model)["n_mels"]
    for mask in masks:
        mask.register_forward_hook(record)
    model.train()
    with torch.no_grad():
        model(torch.randn(2, 4000) * 0.1)
    assert len(found) == len(masks) == 11
    return found


def test_the_boundary_feature_carries_one_noise_draw_at_every_mask_of_the_slot():
    assert NoiseInjectionConfig().slot_noise == "shared"  # the default: one draw per slot and pass
    shared = _boundary_noise_at_each_mask("shared")
    assert all(n is not None for n in shared)
    for noise in shared[1:]:
        assert torch.allclose(noise, shared[0], atol=1e-4)
    first = _boundary_noise_at_each_mask("first")
    assert first[0] is not None and all(n is None for n in first[1:])
    each = _boundary_noise_at_each_mask("each")
    assert not torch.allclose(each[1], each[0], atol=1e-2)
    again = _boundary_noise_at_each_mask("shared")  # a new pass draws anew
    assert not torch.allclose(again[0], shared[0], atol=1e-2)


def _mask_by_plain_operations(x, a, b, noise, k, dim):
    """The training mask written with autograd's own operations (sigma detached)."""
    shape = [1] * x.dim()
    shape[dim] = x.shape[dim]
    keep = torch.cat([torch.ones(k, dtype=x.dtype), torch.zeros(x.shape[dim] - k, dtype=x.dtype)]).view(shape)
    out = x * keep
    boundary = x.narrow(dim, k, 1)
    out.narrow(dim, k, 1).copy_(a * boundary + b * boundary.detach().std(unbiased=False) * noise)
    return out


@pytest.mark.parametrize("relu", [False, True], ids=["mask", "relu-and-mask"])
@pytest.mark.parametrize("boundary_last", [False, True], ids=["features-after", "narrowed"])
@pytest.mark.parametrize("shape,dim", [((3, 6, 4, 5), 1), ((2, 7, 6), -1), ((2, 7, 6), 1)])
def test_the_training_mask_function_matches_autograd_on_plain_operations(shape, dim, boundary_last, relu):
    torch.manual_seed(0)
    x = torch.randn(*shape, dtype=torch.double)
    if x.dim() == 4:
        x = x.contiguous(memory_format=torch.channels_last)
    k = x.shape[dim] - 1 if boundary_last else 3  # narrowed weights: the boundary is the last feature
    noise = torch.randn(x.narrow(dim, k, 1).shape, dtype=torch.double)
    weights = torch.randn(shape, dtype=torch.double)
    results = []
    assert (x.narrow(dim, k, 1) < 0).any() and (x.narrow(dim, k, 1) > 0).any()  # both sides of the ReLU
    mine = lambda xs, a, b: BoundaryMix.apply(xs, a, b, noise, k, dim, relu)  # noqa: E731
    plain = lambda xs, a, b: _mask_by_plain_operations(torch.relu(xs) if relu else xs, a, b, noise, k, dim)  # noqa: E731
    for mask in (mine, plain):
        xs = x.clone().requires_grad_()
        a = torch.tensor(0.7, dtype=torch.double, requires_grad=True)
        b = torch.tensor(0.4, dtype=torch.double, requires_grad=True)
        out = mask(xs, a, b)
        (out * weights).sum().backward()
        results.append((out.detach(), xs.grad, a.grad, b.grad))
    for mine, plain in zip(*results):
        assert torch.allclose(mine, plain, rtol=0, atol=1e-12)
    assert results[0][1][(slice(None),) * (dim % x.dim()) + (slice(k + 1, None),)].abs().sum() == 0
    if x.dim() == 4:  # channels-last convolutions stay fast
        assert results[0][0].is_contiguous(memory_format=torch.channels_last)
    unmixed = torch.autograd.gradcheck(
        lambda xs, a: BoundaryMix.apply(xs, a, torch.zeros((), dtype=torch.double), None, k, dim, relu),
        (x.clone().requires_grad_(), torch.tensor(0.7, dtype=torch.double, requires_grad=True)),
    )
    assert unmixed


def test_masks_that_apply_the_relu_train_the_resnet_as_a_relu_then_the_mask_would():
    """The ResNet's masks apply its ReLUs; noise injection does both in one function."""
    task = make_task("antispoof", {})
    slots = list(task.width_slots())
    wave = 0.1 * torch.randn(3, 16000, generator=torch.Generator().manual_seed(1))
    results = []
    for fused in (True, False):
        torch.manual_seed(0)
        model = task.build_model()
        config = NoiseInjectionConfig(kappa_init=0.8)  # above the narrowing share: dead features zeroed
        controller = NoiseInjectionController(task, slots, FlopsModel(task, slots), config, target=0.25)
        controller.bind(model)
        masks = [m for ms in width_masks(model).values() for m in ms]
        assert all(m.relu and m.relu_transform is not None for m in masks)
        live = {s: controller.live_count(s, True) / controller.full[s] for s in slots}
        assert all(NARROW_SHARE < share < 1 for share in live.values()), live  # masked, with dead features
        if not fused:
            for mask in masks:
                mask.relu_transform = None  # the ReLU, then `transform`
        model.train()
        torch.manual_seed(1)
        out = model(wave)
        (out * torch.arange(1.0, 4.0)).sum().backward()
        grads = [p.grad.clone() for p in model.parameters()] + [k.grad.clone() for k in controller.kappa.values()]
        results.append((out.detach(), grads))
    (fused_out, fused_grads), (plain_out, plain_grads) = results
    assert torch.allclose(fused_out, plain_out, rtol=1e-5, atol=1e-6)
    assert len(fused_grads) == len(plain_grads)
    for mine, plain in zip(fused_grads, plain_grads):
        assert torch.allclose(mine, plain, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize(
    "name,overrides,method,preset,slots,ties",
    [
        ("vad", {"model": "crnn"}, "noise_injection", "paper", ["n_mels"], []),
        (
            "vad",
            {"model": "transformer"},
            "noise_injection",
            "paper",
            ["n_mels", "head_dim", "ffn"],
            [["n_mels", "head_dim", "ffn"]],
        ),
        ("vad", {"model": "transformer"}, "stochastic_gates", "paper", ["n_mels"], []),
        ("antispoof", {}, "noise_injection", "paper", ["stage1", "stage2", "stage3", "stage4"], []),
        ("antispoof", {}, "stochastic_gates", "paper_stage3", ["stage3"], []),
    ],
)
def test_presets_make_the_papers_slots_dynamic(name, overrides, method, preset, slots, ties):
    from bench.registry import get_method_class

    task = make_task(name, overrides)
    cls = get_method_class(method)
    found = preset_slots(task, preset, method)
    assert found.slots == slots and found.ties == ties
    chosen = cls(cls.Config(preset=preset))
    assert chosen.resolve_slots(task) == slots and chosen.label(0.5) == f"preset={preset} target=0.5"


def test_a_tied_preset_consolidates_to_what_the_dynamic_model_computes():
    task = make_task("vad", {"model": "transformer"})
    method = NoiseInjection(NoiseInjectionConfig(preset="paper"))
    slots = method.resolve_slots(task)
    controller = method.make_controller(task, slots, FlopsModel.for_task(task, slots), 0.25, 120)
    assert list(controller.kappa) == ["n_mels"]  # one width parameter for the three slots
    with torch.no_grad():
        controller.kappa["n_mels"].fill_(0.4)
    torch.manual_seed(0)
    model = task.build_model()
    controller.bind(model)
    batch = torch.randn(3, 4000) * 0.1
    with torch.no_grad():
        model.train()
        model(batch)
        model.eval()
        dynamic = model(batch)
    keep = controller.keep()
    unmask_weights(model)
    small, widths = consolidate(task, model, keep)
    assert widths == {"n_mels": 32, "head_dim": 8, "ffn": 64}
    with torch.no_grad():
        assert (small(batch) - dynamic).abs().max().item() <= 1e-5


def test_a_preset_the_task_lacks_is_one_line_and_exit_2(store_path, capsys):
    assert (
        main(
            [
                "run",
                "--task",
                "vad",
                "--method",
                "noise_injection",
                "--scale",
                "smoke",
                "--store",
                store_path,
                "--set",
                "task.model=crnn",
                "--set",
                "method.preset=paper_stage1",
            ]
        )
        == 2
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no preset 'paper_stage1' for task vad (crnn); presets: paper" in err[0]


def test_targets_and_a_kappa_min_grid_are_exclusive(store_path, capsys):
    assert (
        main(
            [
                "run",
                "--task",
                "synthetic",
                "--method",
                "noise_injection",
                "--scale",
                "smoke",
                "--store",
                store_path,
                "--set",
                "method.target=0.5",
                "--set",
                "method.kappa_min=0.5",
            ]
        )
        == 2
    )
    assert "set either target" in capsys.readouterr().err


def test_gates_saturate_and_land_on_their_target(one_thread):
    """The default gates: every gate is saturated when they are fixed (half-way), most gate
    means end far from the threshold, and the kept width is on the target."""
    from bench.training import train

    task = make_task("synthetic", {})
    flops = FlopsModel.for_task(task, ["hidden"])
    recipe = type(task.recipe())(**{**task.recipe().__dict__, "steps": 200})
    controller = GateController(task, ["hidden"], flops, StochasticGatesConfig(), target=0.25, steps=recipe.steps)
    torch.manual_seed(0)
    model = task.build_model()
    controller.bind(model)
    train(task, model, 0, recipe, hooks=controller, progress=False)
    summary = controller.summary()
    assert summary["saturated_gates"] > 0.8 and summary["final_sigma"] == pytest.approx(0.05)
    assert summary["fixed_at_step"] == 100 and summary["saturated_gates_at_fix"] > 0.95
    kept = len(controller.keep()["hidden"])
    assert float(flops.ratio({"hidden": kept})) == pytest.approx(0.25, rel=0.1)


def test_spread_mel_bands_keep_bands_over_the_whole_range_and_consolidate_exactly():
    from tasks.speech.frontend import LogMel, mel_filters

    task = make_task("vad", {"model": "crnn"})
    method = NoiseInjection(NoiseInjectionConfig(mel_bands="spread", preset="paper", kappa_min=[0.25]))
    method.validate(task)
    slots = method.resolve_slots(task)
    controller = method.make_controller(task, slots, FlopsModel.for_task(task, slots), 0.25, 120)
    model = task.build_model()
    method.prepare_model(model)
    controller.bind(model)
    with torch.no_grad():
        controller.kappa["n_mels"].fill_(0.25)
    batch = torch.randn(2, 4000) * 0.1
    model.eval()
    with torch.no_grad():
        dynamic = model(batch)
    keep = controller.keep()
    unmask_weights(model)
    small, widths = consolidate(task, model, keep)
    assert widths["n_mels"] == 20
    with torch.no_grad():
        assert (small(batch) - dynamic).abs().max().item() <= 1e-5
    (logmel,) = [m for m in small.modules() if isinstance(m, LogMel)]
    peak_bin = logmel.filters.argmax(1).float() * 8000 / 256  # each kept band's centre, Hz
    assert peak_bin.max() > 6000 and peak_bin.min() < 200  # low: all under ~0.6 kHz
    low = torch.from_numpy(mel_filters(80))[:20].argmax(1).float() * 8000 / 256
    assert low.max() < 700


def test_spread_mel_bands_need_a_mel_front_end():
    from bench.config import ConfigError

    with pytest.raises(ConfigError, match="mel_bands=spread needs a log-mel front end"):
        NoiseInjection(NoiseInjectionConfig(mel_bands="spread")).validate(make_task("synthetic", {}))


def test_synthetic_width_benchmark_finds_the_teacher_width_over_a_range_of_weights(capsys, one_thread):
    """The benchmark's defaults at the small recipe (about 15 s), teacher 12: the learned
    width is the teacher's (within one unit) over weights 0.1-1, and a weight whose cost
    per unit exceeds a teacher unit's loss gain collapses it (docs/method.md)."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    from synthetic_width import main as width_main

    width_main(["--teacher-width", "12", "--weights", "0.1", "0.3", "1", "10"])
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert last.startswith("learned widths: ")
    *plateau, high = (int(w) for w in last.split(": ")[1].split())
    assert all(11 <= w <= 13 for w in plateau) and high < 6, last
