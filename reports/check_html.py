"""Open the HTML leaderboard in headless Chromium and check it: no console messages (the
page logs nothing, so any message is an error or a warning to look at), the inline script
ran and its sort self-test passed, the leaderboard has one row per (task, model family,
method) of the store, and a screenshot is written.

    python -m reports.check_html report/leaderboard.html --screenshot shot.png [--store results.db]

Exit code 0 when every check passes, 1 otherwise (each failure on one line), 2 when
Chromium is not installed. Debian's `chromium` package is what CI installs (`.ci/run`).
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path

# No network, no background services, no first-run work: the page must stand on its own.
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
    "--disable-extensions",
    "--enable-logging=stderr",
    "--v=0",
]
_CONSOLE = re.compile(r":CONSOLE[:(]\d*\)?\]?\s*(.*)")


def find_chromium() -> str | None:
    """Path of a Chromium binary, or None."""
    for name in ("/usr/bin/chromium", "chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    return None


@dataclass
class BrowserCheck:
    """What the browser saw."""

    status: str  # data-status of #js-status: "ok", "pending" (script never ran) or "error: ..."
    selftest: str  # data-selftest: "ok" when header clicks sorted the leaderboard both ways
    rows: list[tuple[str, str, str]]  # (task, model family, method) of each leaderboard row
    console: list[str] = field(default_factory=list)  # console messages (none expected)
    screenshot: Path | None = None

    def problems(
        self, expected_rows: set[tuple[str, str, str]] | None = None, want_screenshot: bool = True
    ) -> list[str]:
        """One line per failed check (empty: all good)."""
        out = []
        if self.status != "ok":
            out.append(f"inline script status is {self.status!r}, not 'ok'")
        if self.selftest != "ok":
            out.append(f"sort self-test gave {self.selftest!r}")
        out += [f"console message: {m}" for m in self.console]
        if len(set(self.rows)) != len(self.rows):
            out.append("leaderboard has duplicate (task, model, method) rows")
        if expected_rows is not None and set(self.rows) != expected_rows:
            out.append(f"leaderboard rows {sorted(set(self.rows))} differ from the store's {sorted(expected_rows)}")
        if want_screenshot and (
            self.screenshot is None or not self.screenshot.exists() or self.screenshot.stat().st_size < 1000
        ):
            out.append("no screenshot was written")
        return out


class _DomReader(HTMLParser):
    """Reads #js-status and the rows of table#leaderboard from the dumped DOM."""

    def __init__(self) -> None:
        super().__init__()
        self.status, self.selftest, self.rows, self._in_board = "missing", "missing", [], False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        if a.get("id") == "js-status":
            self.status, self.selftest = a.get("data-status", "missing"), a.get("data-selftest", "missing")
        elif tag == "table":
            self._in_board = a.get("id") == "leaderboard"
        elif tag == "tr" and self._in_board and "data-method" in a:
            self.rows.append((a.get("data-task", ""), a.get("data-model", ""), a["data-method"]))


def _chromium(binary: str, args: list[str], timeout: float) -> subprocess.CompletedProcess:
    with tempfile.TemporaryDirectory(prefix="chromium-profile-") as profile:
        return subprocess.run(
            [binary, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *args],
            capture_output=True,
            text=True,
            timeout=timeout,
        )


def check_leaderboard(
    html_path: str | Path, screenshot: str | Path | None, chromium: str | None = None, timeout: float = 90
) -> BrowserCheck:
    """Load the page twice (the DOM after its script ran, with the sort self-test; then a
    screenshot, unless `screenshot` is None) and collect what the browser reported."""
    binary = chromium or find_chromium()
    if binary is None:
        raise FileNotFoundError("chromium is not installed (apt-get install chromium)")
    url = Path(html_path).resolve().as_uri()
    dom = _chromium(binary, ["--dump-dom", url + "#selftest"], timeout)
    reader = _DomReader()
    reader.feed(dom.stdout)
    console = [m.group(1).strip() for line in dom.stderr.splitlines() if (m := _CONSOLE.search(line))]
    if screenshot is None:
        return BrowserCheck(reader.status, reader.selftest, reader.rows, console, None)
    shot = Path(screenshot).resolve()
    shot.parent.mkdir(parents=True, exist_ok=True)
    shot.unlink(missing_ok=True)  # an old screenshot must not pass for a new one
    shot_run = _chromium(binary, [f"--screenshot={shot}", "--window-size=1300,1800", "--hide-scrollbars", url], timeout)
    console += [m.group(1).strip() for line in shot_run.stderr.splitlines() if (m := _CONSOLE.search(line))]
    return BrowserCheck(reader.status, reader.selftest, reader.rows, console, shot if shot.exists() else None)


def store_rows(store_location: str, tasks: list[str] | None = None) -> set[tuple[str, str, str]]:
    """(task, model family, method) of every row in the store, a reference beside every
    family of its task: what the leaderboard must list."""
    from bench.store import ResultStore
    from reports.groups import load_frame

    df = load_frame(ResultStore(store_location, read_only=True), tasks)
    rows = set(zip(df["task"], df["family"], df["method"]))
    families = {(t, f) for t, f in zip(df["task"], df["family"])}
    refs = {(t, m) for t, m, r in zip(df["task"], df["method"], df["reference"]) if r}
    return rows | {(t, f, m) for t, m in refs for task, f in families if task == t}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m reports.check_html", description=__doc__.split("\n\n")[0])
    parser.add_argument("html", help="path of leaderboard.html")
    parser.add_argument("--screenshot", default="leaderboard.png", help="where to write the screenshot (PNG)")
    parser.add_argument(
        "--store", default=None, help="also check one leaderboard row per (task, model, method) of this store"
    )
    args = parser.parse_args(argv)
    if find_chromium() is None:
        print("check_html: chromium is not installed; apt-get install chromium", file=sys.stderr)
        return 2
    result = check_leaderboard(args.html, args.screenshot)
    problems = result.problems(store_rows(args.store) if args.store else None)
    for line in problems:
        print(f"check_html: {line}", file=sys.stderr)
    print(
        f"{len(result.rows)} leaderboard row(s), script {result.status}, self-test {result.selftest}, screenshot "
        f"{result.screenshot}"
    )
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
