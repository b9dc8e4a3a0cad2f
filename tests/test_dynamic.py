"""Width-learning methods: FLOP model, consolidation, gradients, bad input, stored runs."""

import math
import random

import pytest
import torch
from conftest import make_task, task_variants

from bench.cli import main
from bench.complexity import measure
from bench.config import ConfigError
from bench.planning import plan_runs
from bench.store import ResultStore
from methods.dynamic.flops_model import FlopsModel
from methods.dynamic.layout import consolidate, unmask_weights
from methods.noise_injection import NoiseInjectionConfig, NoiseInjectionController
from methods.stochastic_gates import GateController, StochasticGatesConfig

VARIANTS = [pytest.param(name, overrides, id=vid) for vid, name, overrides in task_variants()]


@pytest.fixture(scope="module")
def flops_models():
    cache = {}

    def get(name, overrides=None):
        key = (name, tuple(sorted((overrides or {}).items())))
        if key not in cache:
            task = make_task(name, overrides or {})
            cache[key] = (task, FlopsModel(task, list(task.width_slots())))
        return cache[key]

    return get


@pytest.mark.parametrize("name,overrides", VARIANTS)
def test_flops_model_matches_the_counter_at_integer_widths(name, overrides, flops_models):
    task, flops = flops_models(name, overrides)
    rng = random.Random(1)
    for _ in range(3):
        widths = {s: rng.randint(1, n) for s, n in task.width_slots().items()}
        counted = measure(task.build_model(widths), task.example_input()).flops
        assert float(flops(widths)) == pytest.approx(counted, rel=0.01)
    assert float(flops.ratio(task.width_slots())) == pytest.approx(1.0, rel=1e-6)


def _controllers(task, flops):
    slots = list(task.width_slots())
    ni = NoiseInjectionController(task, slots, flops, NoiseInjectionConfig(), kappa_min=0.05)
    sg = GateController(task, slots, flops, StochasticGatesConfig(), target=0.5)
    with torch.no_grad():
        for s in slots:
            ni.kappa[s].fill_(random.Random(s).uniform(0.05, 0.95))
            sg.mu[s].copy_(torch.randn(sg.mu[s].shape, generator=torch.Generator().manual_seed(3)))
        if len(slots) > 1:
            ni.kappa[slots[0]].fill_(1.0)  # a slot that keeps its full width
    return {"noise_injection": ni, "stochastic_gates": sg}


@pytest.mark.parametrize("method", ["noise_injection", "stochastic_gates"])
@pytest.mark.parametrize("name,overrides", VARIANTS)
def test_consolidated_model_computes_what_the_dynamic_model_does(name, overrides, method, flops_models):
    task, flops = flops_models(name, overrides)
    torch.manual_seed(0)
    controller = _controllers(task, flops)[method]
    model = task.build_model()
    controller.bind(model)
    example = task.example_input()
    batch = torch.randn(3, *example.shape[1:]) * (0.1 if task.example_seconds else 1.0)
    with torch.no_grad():
        model.train()
        model(batch)  # moves any normalisation statistics away from their initial values
        model.eval()
        dynamic = model(batch)
    keep = controller.keep()
    unmask_weights(model)
    small, widths = consolidate(task, model, keep)
    assert all(widths[s] == len(keep[s]) for s in keep)
    assert sum(widths.values()) < sum(task.width_slots().values())
    if method == "noise_injection" and len(task.width_slots()) > 1:
        first = next(iter(task.width_slots()))
        assert widths[first] == task.width_slots()[first]
    assert not any(type(m).__name__ == "WidthMask" and m.transform for m in small.modules())
    with torch.no_grad():
        plain = small(batch)
    assert (dynamic - plain).abs().max().item() <= 1e-5


@pytest.mark.parametrize("offset", [0.0, 1e-7, 1e-4, 0.5, 1 - 1e-4, 1 - 1e-7])
def test_kappa_gradients_are_finite_with_lam_near_0_and_1(offset, flops_models):
    task, flops = flops_models("synthetic")
    controller = NoiseInjectionController(task, ["hidden"], flops, NoiseInjectionConfig(), kappa_min=0.01)
    model = task.build_model()
    controller.bind(model)
    with torch.no_grad():
        controller.kappa["hidden"].fill_((20 + offset) / 64)
    model.train()
    x, y = task.dataset("train")[:64]
    loss = torch.nn.functional.mse_loss(model(x), y) + controller.extra_loss(model, 0)
    loss.backward()
    grad = controller.kappa["hidden"].grad
    assert grad is not None and torch.isfinite(grad).all() and grad.abs().item() > 0


def test_noise_injection_trains_kappa_down_and_records_its_trajectory(store_path):
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
                "--seed",
                "0",
                "--quiet",
                "--set",
                "method.kappa_min=0.25",
                "--set",
                "train.steps=300",
                "--store",
                store_path,
            ]
        )
        == 0
    )
    (row,) = ResultStore(store_path).rows()
    trajectory = row["info"]["width_trajectory"]["hidden"]
    assert trajectory[0][1] > 60 and trajectory[-1][1] < 40  # started near full width, moved down
    assert row["widths"]["hidden"] == round(trajectory[-1][1])
    assert row["info"]["predicted_flops"] == pytest.approx(row["flops"], rel=0.01)


@pytest.mark.parametrize("method", ["noise_injection", "stochastic_gates"])
def test_one_row_per_target_with_consolidated_figures_that_meet_it(method, store_path):
    knob, values = "target", (0.5, 0.25, 0.125)
    assert (
        main(
            [
                "run",
                "--task",
                "synthetic",
                "--method",
                method,
                "--scale",
                "smoke",
                "--seed",
                "0",
                "--quiet",
                "--set",
                "train.steps=100",
                "--store",
                store_path,
            ]
        )
        == 0
    )
    rows = ResultStore(store_path).rows()
    assert sorted(r["label"] for r in rows) == sorted(f"{knob}={v}" for v in values)
    for r in rows:
        assert r["status"] == "ok" and r["flops"] > 0 and r["params"] > 0 and math.isfinite(r["error"])
        assert r["train_steps"] == 100 and r["target_ratio"] == float(r["label"].split("=")[1])
        assert r["target_met"], (r["label"], r["achieved_ratio"])
        hidden = r["widths"]["hidden"]
        assert r["macs"] == 16 * hidden + hidden + hidden * 4  # the consolidated model, measured by the counter


@pytest.mark.parametrize(
    "setting,message",
    [
        ("method.kappa_min=0", "kappa_min and target values must be in (0, 1]"),
        ("method.target=0.5,1.5", "kappa_min and target values must be in (0, 1]"),
        ("method.slots=hidden,nope", "task synthetic has no width slot 'nope'"),
        ("method.target=0.01", "target 0.01 cannot be met on task synthetic"),
        ("method.preset=paper", "no preset 'paper' for task synthetic; presets: none"),
    ],
)
def test_bad_noise_injection_settings_fail_before_training(setting, message):
    with pytest.raises(
        ConfigError, match=message.replace("(", r"\(").replace(")", r"\)").replace("[", r"\[").replace("]", r"\]")
    ):
        plan_runs(["synthetic"], ["noise_injection"], [0], "smoke", [setting])


def test_an_unreachable_gate_budget_fails_before_training(store_path, capsys):
    assert (
        main(
            [
                "run",
                "--task",
                "synthetic",
                "--method",
                "stochastic_gates",
                "--scale",
                "smoke",
                "--store",
                store_path,
                "--set",
                "method.target=0.001",
            ]
        )
        == 2
    )
    err = capsys.readouterr().err
    assert "target 0.001 cannot be met" in err and len(err.strip().splitlines()) == 1
    assert ResultStore(store_path).rows() == []


@pytest.mark.parametrize("method", ["noise_injection", "stochastic_gates"])
def test_default_targets_a_task_cannot_meet_are_left_out_but_explicit_ones_fail(method, capsys):
    """On the VAD CRNN the front end alone costs about a tenth of the dense FLOP/s; with the
    paper's preset (mel bands only) the floor is 0.56: every default target is left out (the
    paper's mel-band counts come from its kappa_min grid)."""
    from bench.registry import get_method_class

    cls = get_method_class(method)
    task = make_task("vad", {"model": "crnn"})
    floor = cls().floor(task)
    assert 0.0625 < floor < 0.125
    assert cls().knob_values(task) == [0.5, 0.25, 0.125]
    cls().validate(task)
    paper = cls(cls.Config(preset="paper"))
    assert 0.5 < paper.floor(task) < 0.6
    assert paper.knob_values(task) == [] and "[0.5, 0.25, 0.125] left out" in capsys.readouterr().err
    paper.validate(task)  # defaults pass: the unreachable ones are left out, not an error
    with pytest.raises(ConfigError, match="target 0.0625 cannot be met"):
        cls(cls.Config(target=[0.25, 0.0625])).validate(task)


def test_gates_keep_their_expected_number_of_open_features_the_most_open_first(flops_models):
    """Not "mu > 0": with unconverged gates that rule kept a number of features unrelated to
    the sum Phi(mu / s) the FLOP cost saw (all of them, or far too few)."""
    task, flops = flops_models("synthetic")
    sg = GateController(task, ["hidden"], flops, StochasticGatesConfig(sigma=0.5), target=0.5)
    mu = sg.mu["hidden"]
    normal = torch.distributions.Normal(0.0, 1.0)
    with torch.no_grad():
        mu.fill_(0.1)
        mu[10:15] = 1.5
        expected = round(float(normal.cdf(mu / 0.5).sum()))  # 5 * 0.999 + 59 * 0.579 = 39
        keep = sg.present("hidden", training=False)
        assert int(keep.sum()) == expected == 39 and keep[10:15].all()
        mu.fill_(-2.0)
        mu[:20] = 2.0  # converged gates: the expected L0 is the mu > 0 rule
        assert torch.equal(sg.present("hidden", training=False), mu > 0)
        mu.fill_(-0.2)
        mu[7] = -0.1  # none open: still the expected number, the most open first
        expected = round(float(normal.cdf(mu / 0.5).sum()))
        keep = sg.present("hidden", training=False)
        assert int(keep.sum()) == expected > 20 and keep[7]
        mu.fill_(-5.0)
        mu[3] = -3.0  # none open at all: one feature stays
        assert sg.present("hidden", training=False).nonzero().flatten().tolist() == [3]


def test_fixed_gates_keep_the_keep_rules_features_and_stop_learning(flops_models):
    """`fix_share`: at the fixing step each slot keeps what the keep rule would keep at
    evaluation; afterwards training sees those 0/1 gates, noise-free, and no cost reaches mu."""
    task, flops = flops_models("synthetic")
    # no target: the keep rule's features are fixed as they are (a target projects them, below)
    sg = GateController(task, ["hidden"], flops, StochasticGatesConfig(fix_share=0.5), target=None, steps=10)
    with torch.no_grad():
        sg.mu["hidden"].copy_(torch.randn(sg.mu["hidden"].shape, generator=torch.Generator().manual_seed(0)))
    for step in range(4):
        sg.after_step(None, step)
    assert sg.fixed is None and sg.present("hidden", training=True) is None
    rule = sg.present("hidden", training=False)
    sg.after_step(None, 4)  # the 5th of 10 steps ends: half the recipe
    assert torch.equal(sg.fixed["hidden"], rule) and sg.summary()["fixed_at_step"] == 5
    assert torch.equal(sg.present("hidden", training=True), rule)
    assert torch.equal(sg.present("hidden", training=False), rule)
    x = torch.ones(2, sg.full["hidden"])
    mask = type("Mask", (), {"slot": "hidden", "dim": 1, "training": True})()
    assert torch.equal(sg.transform(x, mask), x * rule.float())  # the same in every draw
    assert sg.extra_loss(None, 5) is None
    assert float(sg.soft_widths()["hidden"]) == int(rule.sum())


@pytest.mark.parametrize("start,target", [(3.0, 0.125), (-3.0, 0.5)])
def test_fixing_the_gates_projects_the_kept_features_onto_the_target(start, target, flops_models):
    """Over the target, the kept features of lowest mu are dropped (each slot keeps one);
    under it, the dropped ones of highest mu come back, until the ratio is nearest the target."""
    task, flops = flops_models("vad", {"model": "transformer"})
    slots = list(task.width_slots())
    sg = GateController(task, slots, flops, StochasticGatesConfig(fix_share=0.5), target=target, steps=10)
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for mu in sg.mu.values():
            mu.copy_(start + 0.1 * torch.randn(mu.shape, generator=generator))
    rule = {s: sg.keep_rule(s) for s in slots}
    assert abs(sg.hard_ratio(rule) - target) > 0.3  # all open, or one feature per slot
    sg.fix(5)
    fixed, info = sg.fixed, sg.summary()
    assert sg.hard_ratio(fixed) == pytest.approx(target, rel=0.1) == info["ratio_projected"]
    assert info["projected_features"] == sum(int((fixed[s] != rule[s]).sum()) for s in slots) > 0
    kept = torch.cat([sg.mu[s].detach()[fixed[s]] for s in slots if fixed[s].sum() > 1])
    dropped = torch.cat([sg.mu[s].detach()[~fixed[s]] for s in slots])
    assert kept.min() >= dropped.max()  # lowest mu out first, highest back first
    assert all(fixed[s].any() for s in slots)


@pytest.mark.parametrize("straight_through,heard", [("clamp", False), ("identity", True)])
def test_a_shut_gate_hears_the_task_only_with_the_identity_straight_through(straight_through, heard, flops_models):
    """With the clamp's gradient a gate with mu + eps < 0 gets no task gradient and cannot reopen."""
    task, flops = flops_models("synthetic")
    config = StochasticGatesConfig(straight_through=straight_through)
    sg = GateController(task, ["hidden"], flops, config, target=0.5)
    with torch.no_grad():
        sg.mu["hidden"].fill_(-10.0)  # shut in every draw
    mask = type("Mask", (), {"slot": "hidden", "dim": 1, "training": True})()
    out = sg.transform(torch.ones(2, sg.full["hidden"]), mask)
    assert not out.any()
    out.sum().backward()
    grad = sg.mu["hidden"].grad
    assert bool((grad != 0).all()) is heard and bool((grad == 0).all()) is not heard


def test_the_binarization_term_is_zero_for_saturated_gates_and_ramps_in(flops_models):
    task, flops = flops_models("synthetic")
    config = StochasticGatesConfig(binarize=10.0, binarize_share=0.5)
    sg = GateController(task, ["hidden"], flops, config, target=0.5, steps=100)
    sg.sigma = 0.05
    with torch.no_grad():
        sg.mu["hidden"].fill_(-1.0)
        sg.mu["hidden"][:10] = 1.0
    assert sg.binarize_loss(49) is None  # before the last half
    assert float(sg.binarize_loss(99).detach()) == pytest.approx(0.0, abs=1e-6)
    with torch.no_grad():
        sg.mu["hidden"].fill_(0.0)  # every gate a fair coin: variance 1/4 each
    n = sg.full["hidden"]
    assert float(sg.binarize_loss(99).detach()) == pytest.approx(10.0 * n / 4)
    assert float(sg.binarize_loss(62).detach()) == pytest.approx(10.0 * 0.52 * n / 4)  # ramped in over 25 steps


@pytest.mark.parametrize("method", ["noise_injection", "stochastic_gates"])
def test_a_run_gives_the_same_model_whatever_the_process_computed_before(method, tmp_path, one_thread):
    """The FLOP model is fitted once per process and the fit builds models: it used to draw
    from the global generator, so a worker's first run started from other weights than its
    later ones (seen as different widths for the same spec)."""
    from bench.runner import execute
    from bench.shared_state import SharedState

    (spec,) = plan_runs(["synthetic"], [method], [0], "smoke", ["method.target=0.25", "train.steps=60"])
    shared = SharedState()  # one worker's state: the first run fits the FLOP model, the second finds it
    first = execute(spec, ResultStore(str(tmp_path / "a.db")), progress=False, shared=shared).rows[0]
    second = execute(spec, ResultStore(str(tmp_path / "b.db")), progress=False, shared=shared).rows[0]
    assert first["status"] == second["status"] == "ok"
    assert first["info"]["width_trajectory"] == second["info"]["width_trajectory"]
    assert (first["widths"], first["error"]) == (second["widths"], second["error"])
