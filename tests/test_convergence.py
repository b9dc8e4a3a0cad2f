"""benchmarks/convergence.py: the convergence criterion on numbers, and a smoke-size run."""

import importlib.util
import math
import re
import sys
from pathlib import Path

import pytest

from bench.store import ResultStore

_PATH = Path(__file__).resolve().parents[1] / "benchmarks" / "convergence.py"
_spec = importlib.util.spec_from_file_location("convergence", _PATH)
convergence = sys.modules["convergence"] = importlib.util.module_from_spec(_spec)  # dataclasses look it up
_spec.loader.exec_module(convergence)


@pytest.mark.parametrize(
    "error_s, error_2s, passed",
    [
        (3.28, 2.83, False),  # +15.9 %: still improving
        (3.0, 2.8, True),  # +7.1 %
        (2.2, 2.0, True),  # +10 % exactly: within
        (2.0, 2.5, False),  # -20 %: the longer training is worse by more than the tolerance
        (0.0, 0.0, True),
        (0.1, 0.0, False),
    ],
)
def test_criterion_on_numbers(error_s, error_2s, passed):
    assert convergence.converged(error_s, error_2s, 0.10) is passed


def test_relative_gap():
    assert convergence.relative_gap(3.0, 2.0) == pytest.approx(0.5)
    assert convergence.relative_gap(1.5, 2.0) == pytest.approx(-0.25)
    assert math.isinf(convergence.relative_gap(1.0, 0.0))
    assert convergence.converged(3.0, 2.0, tolerance=0.6) and not convergence.converged(3.0, 2.0, tolerance=0.4)


def test_lines_and_summary():
    ok = convergence.Result("vad/crnn", 480, 3.0, 2.9, 12.5, [0, 1], [0.02, 0.05])
    bad = convergence.Result("synthetic", 800, 0.5, 0.1, 0.4, [0])
    failed = convergence.Result("antispoof", 120, math.nan, math.nan, math.nan, [0], failure="NonFiniteLossError: nan")
    pattern = r"vad/crnn\s+480\s+3\s+2\.9\s+\+3\.4%\s+PASS\s+12\.5\s+\[0, 1\] \(\+2\.0%, \+5\.0%\)"
    assert re.fullmatch(pattern, convergence.format_line(ok, 0.1))
    assert " FAIL " in convergence.format_line(bad, 0.1) and "+400.0%" in convergence.format_line(bad, 0.1)
    failed_line = convergence.format_line(failed, 0.1)
    assert "NonFiniteLossError" in failed_line and " FAIL " in failed_line
    assert convergence.summary_line([ok, bad, failed], 0.1) == (
        "summary (1/3 converged within 10%): vad/crnn PASS, synthetic FAIL, antispoof FAIL"
    )


def _parse(line: str) -> tuple[str, int, float, float, str]:
    target, steps, error_s, error_2s, _, verdict = line.split()[:6]
    return target, int(steps), float(error_s), float(error_2s), verdict


def test_smoke_run_through_the_runner(tmp_path, capsys, one_thread):
    store_path = str(tmp_path / "conv.db")
    code = convergence.main(
        [
            "--scale",
            "smoke",
            "--task",
            "synthetic",
            "vad",
            "--set",
            "task.model=crnn",
            "--steps",
            "6",
            "--store",
            store_path,
        ]
    )
    assert code == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[1] == convergence.HEADER and lines[-1].startswith("summary (")
    parsed = {p[0]: p for p in map(_parse, lines[2:-1])}
    assert sorted(parsed) == ["synthetic", "vad/crnn"]
    for target, steps, error_s, error_2s, verdict in parsed.values():
        assert steps == 6 and verdict == ("PASS" if convergence.converged(error_s, error_2s, 0.10) else "FAIL")
        assert f"{target} {verdict}" in lines[-1]
    # The runs are ordinary baseline runs in the store, at S and 2S steps, saved models included.
    rows = ResultStore(store_path).rows()
    steps = sorted((r["task"], r["config"]["train"]["steps"]) for r in rows)
    assert steps == [("synthetic", 6), ("synthetic", 12), ("vad", 6), ("vad", 12)]
    assert all(r["method"] == "baseline" and r["status"] == "ok" for r in rows)


@pytest.mark.parametrize(
    "argv, word",
    [
        (["--steps", "0"], "--steps"),
        (["--set", "train.nonsense=1"], "train.nonsense"),
        (["--task", "nosuchtask"], "nosuchtask"),
        (["--tolerance", "1.5"], "--tolerance"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(argv, word, capsys, tmp_path):
    assert convergence.main(argv + ["--scale", "smoke", "--store", str(tmp_path / "x.db")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and word in err
    assert not (tmp_path / "x.db").exists()  # nothing ran
