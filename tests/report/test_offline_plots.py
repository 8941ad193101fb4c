"""`dvc plots show` writes a page that draws every chart offline: opened in a real headless Chromium."""

import re
import shutil
import subprocess

import pytest

from tests.support import run

pytestmark = pytest.mark.e2e

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
EMBED = re.compile(r"vegaEmbed\('#([^']+)', spec\);")


def drawn_marks(dom: str) -> list[int]:
    """For each chart in a page's DOM (a Vega SVG of class "marks"), how many marks it drew: paths with
    geometry inside Vega's mark groups (lines, points, areas, rules)."""
    counts = []
    for chart in re.split(r'<svg[^>]*class="marks"', dom)[1:]:
        chart = chart[: chart.index("</svg>")]
        groups = re.findall(r'<g class="mark-\w+ role-mark[^"]*"[^>]*>(.*?)</g>', chart, re.S)
        counts.append(sum(len(re.findall(r'<path[^>]*\sd="M', body)) for body in groups))
    return counts


@pytest.mark.skipif(CHROMIUM is None, reason="no chromium on this machine (.ci/run installs Debian's chromium)")
def test_the_plots_page_draws_every_chart_with_no_network(dvc_repo):
    run(dvc_repo, "dvc", "plots", "show")
    page = (dvc_repo / "dvc_plots" / "index.html").read_text()
    assert "<script src=" not in page and "cdn.jsdelivr" not in page  # nothing to fetch: Vega is inlined
    charts = EMBED.findall(page)
    assert len(charts) == 5  # one per quantity: train loss, valid loss, valid Dice, lr, per-image Dice
    # The same page with Vega's SVG renderer, so the drawing is in the DOM Chromium prints (the default
    # canvas keeps it in pixels). --virtual-time-budget lets the asynchronous rendering finish first.
    svg = dvc_repo / "dvc_plots" / "svg.html"
    svg.write_text(EMBED.sub(r"vegaEmbed('#\1', spec, {renderer: 'svg'});", page))
    dom = subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--virtual-time-budget=20000", "--dump-dom",
         svg.as_uri()],
        capture_output=True, text=True, timeout=180,
    ).stdout  # fmt: skip
    marks = drawn_marks(dom)
    assert len(marks) == len(charts) and all(n > 0 for n in marks), marks
