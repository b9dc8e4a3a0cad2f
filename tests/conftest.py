import dataclasses

import pytest
import torch

from bench import registry


@pytest.fixture(autouse=True)
def serial_runs(monkeypatch):
    """`bench run` in this process (BENCH_JOBS=1), so monkeypatches reach the runs; the tests
    of parallel runs ask for --jobs explicitly."""
    monkeypatch.setenv("BENCH_JOBS", "1")


@pytest.fixture
def store_path(tmp_path):
    return str(tmp_path / "results.db")


@pytest.fixture
def one_thread():
    """One torch thread: tiny models run many times faster so on a shared 2-core machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def task_variants() -> list[tuple[str, str, dict]]:
    """(test id, task name, config overrides): every registered task and model family."""
    out = []
    for name in registry.task_names():
        families = registry.get_task_class(name).model_families
        out += [(f"{name}-{f}", name, {"model": f}) for f in families] or [(name, name, {})]
    return out


def make_task(name: str, overrides: dict, scale: str = "smoke"):
    cls = registry.get_task_class(name)
    return cls(dataclasses.replace(cls.Config(), **overrides), scale=scale)
