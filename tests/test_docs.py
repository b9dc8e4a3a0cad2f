"""The repository's text speaks of the software and what was measured, and its docs hold
together: no development history, a README a newcomer can read, links that resolve."""

import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
# Phrases that narrate how the work was organised rather than what the software does.
HISTORY = re.compile(
    r"\bissue \d+|\bissue #\d+|the brief\b|\brun [AB]\b|earlier session|this session|"
    r"shared/(METHOD|STYLE|DATA)|\.\./shared|STYLE rule|lab notebook",
    re.IGNORECASE,
)


def tracked_text_files() -> list[Path]:
    names = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
    return [
        ROOT / n for n in names if n.endswith((".py", ".md", ".toml", ".ini", ".txt", ".cfg")) or n.startswith(".ci/")
    ]


def test_no_text_narrates_the_development_history():
    hits = []
    for path in tracked_text_files():
        if path.name == "test_docs.py" or not path.exists():
            continue
        for number, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
            if HISTORY.search(line):
                hits.append(f"{path.relative_to(ROOT)}:{number}: {line.strip()}")
    assert not hits, "\n".join(hits)


def test_the_pattern_catches_what_it_should():
    for text in (
        "see issue 3",
        "the brief's definition",
        "measured in run A",
        "an earlier session found",
        "shared/METHOD.md",
    ):
        assert HISTORY.search(text), text
    assert not HISTORY.search("--models-dir /shared/bench-models")


def test_readme_is_short_and_its_local_links_resolve():
    readme = (ROOT / "README.md").read_text()
    assert len(readme) < 12_000
    for target in re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", readme):
        if "://" not in target:
            assert (ROOT / target).exists(), target


@pytest.mark.parametrize(
    "page", ["comparison", "counting", "data", "extending", "scaling", "store", "method", "reliability", "latency"]
)
def test_docs_pages_exist_and_their_links_resolve(page):
    path = ROOT / "docs" / f"{page}.md"
    assert path.exists(), path
    for target in re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", path.read_text()):
        if "://" not in target:
            assert (path.parent / target).exists(), f"{page}.md -> {target}"


def test_results_file_gives_command_revision_and_machine():
    text = (ROOT / "RESULTS.md").read_text()
    for word in ("python -m bench run", "git revision", "machine"):
        assert word in text, word
