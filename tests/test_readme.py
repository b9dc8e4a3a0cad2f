"""The README's quick start is what CI runs: the test command must not drift."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def quick_start_commands() -> list[str]:
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    return [
        line.strip()
        for block in re.findall(r"```(?:bash|sh)?\n(.*?)```", section, re.S)
        for line in block.splitlines()
        if line.strip() and not line.startswith("#")
    ]


def test_quick_start_has_two_commands_and_ci_runs_the_test_one():
    commands = quick_start_commands()
    assert len(commands) == 2, commands
    main_job, tests = commands
    assert "python -m bench run --method all" in main_job and "pytest" in tests
    ci = [
        line.strip()
        for line in (ROOT / ".ci" / "run").read_text().splitlines()
        if line.strip() and not line.startswith(("#", "set ", "cd "))
    ]
    assert ci[-1] == tests  # earlier lines may only prepare the machine (e.g. install a browser)


def test_both_commands_install_through_the_constraints_file():
    for command in quick_start_commands():
        assert "-c constraints.txt" in command
    assert "torch==2.13.0" in (ROOT / "constraints.txt").read_text()
