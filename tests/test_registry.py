"""The registries list exactly the plug-in modules that exist, and every entry works."""

import dataclasses

import pytest
import torch
from conftest import make_task, task_variants

from bench import registry
from bench.cli import main
from bench.complexity import measure


@pytest.mark.parametrize(
    "package,names,get",
    [
        ("tasks", registry.task_names, registry.get_task_class),
        ("methods", registry.method_names, registry.get_method_class),
    ],
)
def test_registries_list_exactly_the_modules_present(package, names, get):
    # Each plug-in module registers exactly one name: nothing unregistered, nothing extra.
    modules = [get(name).__module__ for name in names()]
    assert sorted(modules) == [f"{package}.{m}" for m in registry.plugin_modules(package)]


def test_registering_a_name_twice_is_an_error():
    existing = registry.get_method_class("baseline")

    class Other:
        pass

    with pytest.raises(ValueError, match="registered twice"):
        registry.register_method("baseline")(Other)
    assert registry.get_method_class("baseline") is existing


def test_unknown_names_list_the_choices():
    with pytest.raises(registry.UnknownNameError, match="choose from: .*synthetic"):
        registry.get_task_class("nope")
    with pytest.raises(registry.UnknownNameError, match="choose from: .*baseline"):
        registry.get_method_class("nope")


def test_list_command_prints_every_task_and_method(capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    for name in registry.task_names() + registry.method_names():
        line = next(text for text in out.splitlines() if text.split()[:1] == [name])
        assert len(line.split()) > 1, f"{name} has no description"


@pytest.mark.parametrize("name,overrides", [pytest.param(n, o, id=i) for i, n, o in task_variants()])
def test_every_task_builds_a_measurable_model_at_full_and_reduced_width(name, overrides):
    task = make_task(name, overrides)
    assert dataclasses.is_dataclass(task.Config)
    full = task.width_slots()
    assert full and all(isinstance(v, int) and v >= 1 for v in full.values())
    example = task.example_input()
    big = task.build_model()
    small = task.build_model({slot: max(1, n // 2) for slot, n in full.items()})
    with torch.no_grad():
        assert torch.isfinite(big.eval()(example)).all()
    assert measure(small, example).macs < measure(big, example).macs


@pytest.mark.parametrize("name", registry.method_names())
def test_every_method_has_a_config_and_a_description(name):
    cls = registry.get_method_class(name)
    assert dataclasses.is_dataclass(cls.Config) and cls.description
    if cls.knob is not None:
        assert isinstance(getattr(cls.Config(), cls.knob), list)


def test_a_running_method_gets_one_scalar_knob_value():
    from bench.planning import plan_runs, run_knob
    from methods.base import RunContext

    specs = plan_runs(["synthetic"], ["structured", "noise_injection"], seeds=[0], scale="smoke")
    values = sorted((s.method, run_knob(s.build_method())) for s in specs)
    assert values == sorted((m, t) for m in ("structured", "noise_injection") for t in (0.5, 0.25, 0.125))
    method = specs[0].build_method()
    ctx = RunContext(task=None, seed=0, recipe=None, knob=0.25)
    assert method.knob_value(ctx) == 0.25
    with pytest.raises(ValueError, match="one run takes one"):  # a list of several is the runner's to split
        type(method)().knob_value(RunContext(task=None, seed=0, recipe=None))


@pytest.mark.parametrize("name,overrides", [pytest.param(n, o, id=i) for i, n, o in task_variants()])
def test_every_slot_is_marked_by_width_masks_that_act_on_its_features(name, overrides):
    from tasks.base import width_masks

    task = make_task(name, overrides)
    model = task.build_model().eval()
    masks = width_masks(model)
    assert set(masks) == set(task.width_slots())
    example = task.example_input()
    with torch.no_grad():
        dense = model(example)
        seen = {}
        for slot_masks in masks.values():
            for mask in slot_masks:
                mask.transform = lambda x, m: seen.setdefault(m.slot, x.shape[m.dim]) and x * 0
        zeroed = model(example)
    # Each mask sees its slot's full width, and zeroing a slot changes the output.
    assert seen == task.width_slots()
    assert not torch.allclose(dense, zeroed)


@pytest.mark.parametrize("name", registry.task_names())
def test_every_task_describes_its_metric_for_the_reports(name):
    info = registry.get_task_class(name).metric_info()
    assert set(info) == {"name", "label", "unit", "chance", "iso_tolerance", "breakdowns"}
    assert info["name"] and info["label"] and isinstance(info["unit"], str)
    assert info["chance"] is None or info["chance"] > 0
