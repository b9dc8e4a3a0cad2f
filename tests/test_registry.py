"""The registries list exactly the plug-in modules that exist, and every entry works."""
import dataclasses

import pytest
import torch

from bench import registry
from bench.cli import main
from bench.complexity import measure


def test_registries_list_exactly_the_modules_present():
    # One module, one registered name, equal to the module's name: nothing unregistered, nothing extra.
    assert registry.task_names() == registry.plugin_modules("tasks")
    assert registry.method_names() == registry.plugin_modules("methods")
    for name in registry.task_names():
        assert registry.get_task_class(name).__module__ == f"tasks.{name}"
    for name in registry.method_names():
        assert registry.get_method_class(name).__module__ == f"methods.{name}"


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
        line = next(l for l in out.splitlines() if l.split()[:1] == [name])
        assert len(line.split()) > 1, f"{name} has no description"


@pytest.mark.parametrize("name", registry.task_names())
def test_every_task_builds_a_measurable_model_at_full_and_reduced_width(name):
    task = registry.get_task_class(name)(scale="smoke")
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
