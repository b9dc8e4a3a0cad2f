"""Width-learning methods: FLOP model, consolidation, gradients, bad input, stored runs."""
import math
import random

import pytest
import torch

from bench.cli import main
from bench.complexity import measure
from bench.config import ConfigError
from bench.runner import plan_runs
from bench.store import ResultStore
from methods.dynamic.flops_model import FlopsModel
from methods.dynamic.layout import consolidate, unmask_weights
from methods.noise_injection import NoiseInjectionConfig, NoiseInjectionController
from methods.stochastic_gates import GateController, StochasticGatesConfig


from conftest import make_task, task_variants

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
    sg = GateController(task, slots, flops, StochasticGatesConfig(), budget=0.5)
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
    assert main(["run", "--task", "synthetic", "--method", "noise_injection", "--scale", "smoke", "--seed", "0", "--quiet",
                 "--set", "method.kappa_min=0.25", "--set", "train.steps=300", "--store", store_path]) == 0
    (row,) = ResultStore(store_path).rows()
    trajectory = row["info"]["width_trajectory"]["hidden"]
    assert trajectory[0][1] > 60 and trajectory[-1][1] < 40  # started near full width, moved down
    assert row["widths"]["hidden"] == round(trajectory[-1][1])
    assert row["info"]["predicted_flops"] == pytest.approx(row["flops"], rel=0.01)


@pytest.mark.parametrize("method,knob,values", [("noise_injection", "kappa_min", (0.5, 0.25, 0.125)),
                                               ("stochastic_gates", "budget", (0.5, 0.25, 0.125, 0.0625))])
def test_one_row_per_knob_value_with_consolidated_figures(method, knob, values, store_path):
    assert main(["run", "--task", "synthetic", "--method", method, "--scale", "smoke", "--seed", "0", "--quiet",
                 "--set", "train.steps=100", "--store", store_path]) == 0
    rows = ResultStore(store_path).rows()
    assert sorted(r["label"] for r in rows) == sorted(f"{knob}={v}" for v in values)
    for r in rows:
        assert r["status"] == "ok" and r["flops"] > 0 and r["params"] > 0 and math.isfinite(r["error"])
        hidden = r["widths"]["hidden"]
        assert r["macs"] == 16 * hidden + hidden + hidden * 4  # the consolidated model, measured by the counter


@pytest.mark.parametrize("setting,message", [
    ("method.kappa_min=0", "kappa_min must be in (0, 1]"),
    ("method.kappa_min=0.5,1.5", "kappa_min must be in (0, 1]"),
    ("method.slots=hidden,nope", "task synthetic has no width slot 'nope'"),
    ("method.budget=0.01", "budget 0.01 cannot be met with kappa_min=0.5"),
])
def test_bad_noise_injection_settings_fail_before_training(setting, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)").replace("[", r"\[").replace("]", r"\]")):
        plan_runs(["synthetic"], ["noise_injection"], [0], "smoke", [setting])


def test_an_unreachable_gate_budget_fails_before_training(store_path, capsys):
    assert main(["run", "--task", "synthetic", "--method", "stochastic_gates", "--scale", "smoke", "--store", store_path,
                 "--set", "method.budget=0.001"]) == 2
    assert "budget 0.001 cannot be met" in capsys.readouterr().err
    assert ResultStore(store_path).rows() == []


def test_noise_injection_finds_the_teachers_width_at_small_scale(tmp_path):
    """Issue 3's evidence: the knee of the learned curve is within +-40% of the teacher's width."""
    from bench.runner import run_all

    store = ResultStore(str(tmp_path / "knee.db"))
    for teacher in (12, 24):
        specs = plan_runs(["synthetic"], ["baseline", "noise_injection"], [0], "small", [f"task.teacher_width={teacher}"])
        run_all(specs, store, progress=False)
        rows = [r for r in store.rows() if r["task_config"]["teacher_width"] == teacher]
        assert all(r["status"] == "ok" for r in rows)
        dense = next(r["error"] for r in rows if r["method"] == "baseline")
        curve = [(r["widths"]["hidden"], r["error"]) for r in rows if r["method"] == "noise_injection"]
        knee = min(w for w, e in curve if e <= 2 * dense)
        assert abs(knee - teacher) <= 0.4 * teacher, (teacher, dense, sorted(curve))


def test_default_gate_budgets_a_task_cannot_meet_are_left_out_but_explicit_ones_fail(capsys):
    """On the VAD CRNN the front end alone costs about a tenth of the dense FLOP/s."""
    from methods.stochastic_gates import StochasticGates

    task = make_task("vad", {"model": "crnn"})
    method = StochasticGates()
    floor = method.floor(task)
    assert 0.0625 < floor < 0.125
    assert method.knob_values(task) == [0.5, 0.25, 0.125]
    assert "0.0625" in capsys.readouterr().err
    method.validate(task)  # defaults pass: the unreachable one is left out, not an error
    with pytest.raises(ConfigError, match="budget 0.0625 cannot be met"):
        StochasticGates(StochasticGatesConfig(budget=[0.25, 0.0625])).validate(task)


def test_gates_keep_their_expected_number_of_open_features_the_most_open_first(flops_models):
    """Not every mu > 0: after a short training all mu sit in (0, 1) and that kept the dense
    model, while the FLOP cost saw sum Phi(mu / s) features."""
    task, flops = flops_models("synthetic")
    sg = GateController(task, ["hidden"], flops, StochasticGatesConfig(sigma=0.5), budget=0.5)
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
        mu.fill_(-1.0)
        mu[7] = -0.2  # none open: the most open one stays
        assert sg.present("hidden", training=False).nonzero().flatten().tolist() == [7]


@pytest.mark.parametrize("method", ["noise_injection", "stochastic_gates"])
def test_a_run_gives_the_same_model_whatever_the_process_computed_before(method, tmp_path, one_thread):
    """The FLOP model is fitted once per process and the fit builds models: it used to draw
    from the global generator, so a worker's first run started from other weights than its
    later ones (seen as different widths for the same spec)."""
    from bench.runner import execute

    (spec,) = plan_runs(["synthetic"], [method], [0], "smoke", [f"method.{'kappa_min' if method == 'noise_injection' else 'budget'}=0.25",
                                                                "train.steps=60"])
    FlopsModel._cache.clear()  # as in a fresh worker
    first = execute(spec, ResultStore(str(tmp_path / "a.db")), progress=False).rows[0]
    second = execute(spec, ResultStore(str(tmp_path / "b.db")), progress=False).rows[0]
    assert first["status"] == second["status"] == "ok"
    assert first["info"]["width_trajectory"] == second["info"]["width_trajectory"]
    assert (first["widths"], first["error"]) == (second["widths"], second["error"])


@pytest.mark.parametrize("method,knob,values,steps", [("noise_injection", "kappa_min", (0.6, 0.2, 0.1), 300),
                                                     ("stochastic_gates", "budget", (0.7, 0.3, 0.2), 100)])
def test_a_lower_bound_reuses_a_run_whose_bound_never_acted(method, knob, values, steps, tmp_path):
    """Training with a lower bound repeats a run whose bound never acted (kappas stayed above
    kappa_min; the FLOP ratio above the budget) step for step, so that run's model is reused
    and re-evaluated; a run whose bound acted is not reused."""
    from bench.checkpoint import load_candidate

    args = ["run", "--task", "synthetic", "--method", method, "--scale", "smoke", "--seed", "0", "--quiet", "--set", f"train.steps={steps}"]
    assert main(args + ["--set", f"method.{knob}={','.join(map(str, values))}", "--store", str(tmp_path / "a.db")]) == 0
    store = ResultStore(str(tmp_path / "a.db"))
    high, mid, low = ({r["label"]: r for r in store.rows()}[f"{knob}={v}"] for v in values)
    assert high["info"]["bound_reached"] and "same_as" not in high["info"]
    assert not mid["info"]["bound_reached"] and "same_as" not in mid["info"]  # the higher bound acted: trained
    assert low["info"]["same_as"] == mid["run_key"] and low["train_seconds"] == mid["train_seconds"]
    assert (low["widths"], low["error"]) == (mid["widths"], mid["error"])

    # Trained alone, the lowest bound gives that very model.
    assert main(args + ["--set", f"method.{knob}={values[-1]}", "--store", str(tmp_path / "b.db")]) == 0
    alone_store = ResultStore(str(tmp_path / "b.db"))
    (alone,) = alone_store.rows()
    assert "same_as" not in alone["info"] and (alone["widths"], alone["error"]) == (low["widths"], low["error"])
    trained, _ = load_candidate(alone_store.models_dir / alone["model_path"])
    reused, _ = load_candidate(store.models_dir / low["model_path"])
    assert all(torch.equal(a, b) for a, b in zip(reused.state_dict().values(), trained.state_dict().values()))
