"""A task and a method from another installed package: a fixture package is pip-installed
into a folder of its own, and the benchmark finds both through entry points, lists them,
runs them and holds them to the generated contract test."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
FIXTURE = Path(__file__).resolve().parent / "fixtures" / "plugin"


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    """The fixture package installed with pip into its own folder (a copy is built: the build
    writes into the source tree)."""
    work = tmp_path_factory.mktemp("plugin")
    shutil.copytree(FIXTURE, work / "src")
    target = work / "site"
    cmd = [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation", "--no-index"]
    subprocess.run([*cmd, "--target", str(target), str(work / "src")], check=True)
    assert list(target.glob("bench_plugin_demo-*.dist-info"))
    return target


def bench(site: Path, *args: str, **kwargs) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), str(ROOT)])}
    return subprocess.run([sys.executable, *args], cwd=ROOT, env=env, capture_output=True, text=True, **kwargs)


def test_installed_plugins_are_listed(site):
    out = bench(site, "-m", "bench", "list")
    assert out.returncode == 0, out.stderr
    assert "demo_wide_teacher" in out.stdout and "demo_half" in out.stdout


def test_a_plugin_method_runs_on_a_plugin_task_and_its_row_is_stored(site, tmp_path):
    store = str(tmp_path / "r.db")
    run = ["-m", "bench", "run", "--task", "demo_wide_teacher", "--method", "demo_half", "baseline"]
    run += ["--scale", "smoke", "--seed", "0", "--quiet", "--store", store, "--set", "train.steps=20"]
    out = bench(site, *run)
    assert out.returncode == 0, out.stderr
    listed = bench(site, "-m", "bench", "results", "--store", store)
    assert listed.returncode == 0 and "demo_half" in listed.stdout and "fraction=0.5" in listed.stdout


def test_the_plugins_keep_the_generated_contract(site):
    """The contract test, generated from the registries, picks the plug-ins up by itself:
    the plug-in method on every task, every method on the plug-in task."""
    out = bench(site, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/test_contract.py", "-k", "demo")
    assert out.returncode == 0, out.stdout[-3000:]
    passed = int(out.stdout.strip().splitlines()[-1].split(" passed")[0].split()[-1])
    assert passed >= 8, out.stdout[-1000:]


def test_a_plugin_that_fails_to_load_is_one_line(tmp_path):
    """An entry point to a module that does not exist: one line naming the plug-in, exit 2."""
    info = tmp_path / "broken_plugin-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: broken-plugin\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text("[smallspeech_bench.methods]\nbroken = no_such_module:Method\n")
    out = bench(tmp_path, "-m", "bench", "list")
    assert out.returncode == 2
    err = out.stderr.strip()
    assert len(err.splitlines()) == 1 and "plug-in 'broken'" in err and "broken-plugin 1.0" in err
