"""report.html in a real browser (headless Chromium): it loads with no console errors, makes no
external request, runs no script from model text, and leaves a screenshot in the run folder.

Slow (``make test-slow``): installs Debian's ``chromium`` with apt when it is missing and the
test runs as root; skips with the reason otherwise.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from report_fixtures import authors_figures, make_run

from bebkit.pipeline.report import write_comparison, write_report

pytestmark = pytest.mark.slow


def _chromium() -> str:
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if exe:
        return exe
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        pytest.skip("chromium is not installed and cannot be installed (not root or no apt-get)")
    try:
        subprocess.run(
            ["apt-get", "install", "-y", "--no-install-recommends", "chromium"],
            capture_output=True, timeout=900, check=True,
            env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"},
        )  # fmt: skip
    except (subprocess.SubprocessError, OSError) as exc:
        pytest.skip(f"chromium is not installed and `apt-get install chromium` failed: {exc}")
    exe = shutil.which("chromium")
    if not exe:
        pytest.skip("apt-get installed no chromium executable")
    return exe


def _figures(folder: Path) -> Path:
    """Figures that look like the real ones (a curve with error bars), one per stem."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    folder.mkdir(parents=True, exist_ok=True)
    n = np.arange(0, 6)
    for stem in ("beta_sigma", "prompt_dist", "convergence", "misalign", "pretrained"):
        fig, ax = plt.subplots(figsize=(7, 4.5))
        y = 12 * np.exp(-0.6 * n) + 1
        ax.errorbar(n, y, yerr=0.5, fmt="o-", label="this run")
        ax.plot(n, 14 * np.exp(-0.8 * n) + 1, ":x", label="paper")
        ax.set_title(stem)
        ax.set_xlabel("sentences n")
        ax.legend()
        fig.tight_layout()
        fig.savefig(folder / f"{stem}.png", dpi=100)
        plt.close(fig)
    return folder


_FLAGS = (
    "--headless", "--disable-gpu", "--no-sandbox", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    '--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE localhost',
    "--enable-logging=stderr", "--v=0",
)  # fmt: skip


def _browse(exe: str, page: Path, profile: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [exe, *_FLAGS, f"--user-data-dir={profile}", *extra, page.resolve().as_uri()],
        capture_output=True, text=True, timeout=180,
    )  # fmt: skip


def _console(stderr: str) -> list[str]:
    """Console messages and blocked loads Chromium logs for the page."""
    return [
        line for line in stderr.splitlines()
        if "CONSOLE" in line or "Refused to" in line or "net::ERR_" in line
    ]  # fmt: skip


def _check_page(exe: str, page: Path, tmp: Path, screenshot: Path) -> str:
    text = page.read_text(encoding="utf-8")
    refs = re.findall(r"""(?:src|href)\s*=\s*["']?([^"'\s>]+)""", text, flags=re.I)
    assert [r for r in refs if re.match(r"(https?:|//)", r, flags=re.I)] == []
    netlog = tmp / f"{page.stem}-netlog.json"
    dom_run = _browse(exe, page, tmp / "profile-dom", "--dump-dom", f"--log-net-log={netlog}")
    assert dom_run.returncode == 0, dom_run.stderr[-2000:]
    dom = dom_run.stdout
    assert _console(dom_run.stderr) == []
    # No request the page caused: Chromium's own background requests (its update and account
    # services) appear in the net log; none of the page's text may be among the URLs.
    log = netlog.read_text(errors="replace")
    assert '"constants"' in log, "Chromium wrote no net log: cannot check requests"
    urls = set(re.findall(r'"url":"(https?://[^"]+)"', log))
    assert [u for u in urls if u in text or "evil.example" in u] == []
    # No script from model text ran: no script element, no live handler, nothing it would set.
    assert "<script" not in dom.lower()
    assert re.search(r"<[^>]*\sonerror\s*=", dom, flags=re.I) is None
    assert "data-pwned" not in dom and "<title>pwned" not in dom
    shot = _browse(exe, page, tmp / "profile-shot", f"--screenshot={screenshot}",
                   "--window-size=1280,2000", "--hide-scrollbars")  # fmt: skip
    assert shot.returncode == 0, shot.stderr[-2000:]
    assert _console(shot.stderr) == []
    assert screenshot.read_bytes()[:4] == b"\x89PNG"
    return dom


def test_report_in_headless_chromium(tmp_path: Path) -> None:
    exe = _chromium()
    figs = _figures(tmp_path / "figs")
    run = make_run(tmp_path / "run", payload=True, figures=figs)
    _, page = write_report(run, paper_figures=authors_figures(tmp_path / "authors.json"))
    dom = _check_page(exe, page, tmp_path, run / "report-screenshot.png")
    assert "The answer" in dom and "Measured vs the paper" in dom
    assert "&lt;script&gt;alert(1)" in dom  # shown as text


def test_comparison_in_headless_chromium(tmp_path: Path) -> None:
    exe = _chromium()
    figs = _figures(tmp_path / "figs")
    a = make_run(tmp_path / "a", name="before", figures=figs)
    b = make_run(tmp_path / "b", name="after", model="tiny-chat-v2", figures=figs)
    _, page = write_comparison([a, b], tmp_path / "cmp")
    dom = _check_page(exe, page, tmp_path, tmp_path / "cmp" / "compare-screenshot.png")
    assert "Figures side by side" in dom
