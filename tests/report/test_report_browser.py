"""The HTML reports in a real browser: headless Chromium loads them with no console error and every image decodes.

Chromium and its driver are Debian's ``chromium`` and ``chromium-driver``
packages (``/usr/bin/chromium``, ``/usr/bin/chromedriver``), driven through
Selenium; ``CRYOSCAPE_CHROMIUM`` and ``CRYOSCAPE_CHROMEDRIVER`` override the
paths. Where either is missing the tests skip and say why, unless
``CRYOSCAPE_REQUIRE_BROWSER=1`` (set by ``.ci/run``), where they fail.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest

REQUIRE = os.environ.get("CRYOSCAPE_REQUIRE_BROWSER") == "1"
PAGE_TIMEOUT_S = 30

# 1×1 PNG and a truncated one, for the control page
GOOD_PNG = ("iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg==")
BROKEN_PNG = "iVBORw0KGgoAAAANSUhEUgAA"


def _unavailable(reason: str) -> None:
    """Skip with ``reason``, or fail when the browser is required."""
    if REQUIRE:
        pytest.fail(f"CRYOSCAPE_REQUIRE_BROWSER=1 but {reason}")
    pytest.skip(reason)


def _executable(env: str, name: str) -> str | None:
    """``$env`` if set, else ``name`` on the PATH; None unless it is an executable file."""
    return shutil.which(os.environ.get(env) or name)


@pytest.fixture(scope="module")
def browser():
    """Headless Chromium under chromedriver, started for this module and closed after it."""
    try:
        from selenium import webdriver
        from selenium.common.exceptions import WebDriverException
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        _unavailable("selenium is not installed (pip install -e '.[test]')")
    chromium = _executable("CRYOSCAPE_CHROMIUM", "chromium")
    driver_path = _executable("CRYOSCAPE_CHROMEDRIVER", "chromedriver")
    if chromium is None or driver_path is None:
        _unavailable("chromium or chromedriver is not installed (apt-get install chromium chromium-driver)")
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--disable-extensions", "--no-first-run"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    try:
        driver = webdriver.Chrome(service=Service(driver_path), options=options)
    except WebDriverException as exc:
        pytest.fail(f"chromium did not start: {exc.msg}")
    driver.set_page_load_timeout(PAGE_TIMEOUT_S)
    yield driver
    driver.quit()


def page_problems(driver, path: Path) -> tuple[int, list[str]]:
    """Open ``path`` and return (number of images, problems): SEVERE console entries and images that did not decode."""
    from selenium.webdriver.support.ui import WebDriverWait

    driver.get_log("browser")  # drop entries of earlier pages
    driver.get(path.resolve().as_uri())
    WebDriverWait(driver, PAGE_TIMEOUT_S).until(lambda d: d.execute_script("return document.readyState") == "complete")
    images = driver.execute_script(
        "return Array.from(document.images).map(i => [i.alt || i.src.slice(0, 40), i.complete, i.naturalWidth]);")
    problems = [f"image {name!r} did not decode" for name, complete, width in images if not (complete and width > 0)]
    problems += [f"console: {e['message']}" for e in driver.get_log("browser") if e["level"] == "SEVERE"]
    return len(images), problems


def test_checks_catch_a_broken_image_and_a_console_error(browser, tmp_path):
    page = tmp_path / "control.html"
    page.write_text(f'<!DOCTYPE html><html><body><img alt="good" src="data:image/png;base64,{GOOD_PNG}">'
                    f'<img alt="broken" src="data:image/png;base64,{BROKEN_PNG}">'
                    '<script>console.error("planted error")</script></body></html>')
    n, problems = page_problems(browser, page)
    assert n == 2
    assert any("'broken'" in p for p in problems) and not any("'good'" in p for p in problems)
    assert any("planted error" in p for p in problems)


def test_run_report_loads_cleanly(browser, tmp_path):
    from cryoscape.analysis.pipeline import AnalysisSettings, analyse_latents
    from cryoscape.report.run_report import REPORT_NAME, write_analysis_report

    rng = np.random.default_rng(0)
    t = rng.random(300)
    z = np.stack([t, np.sin(3 * t), t ** 2], axis=1) + 0.05 * rng.standard_normal((300, 3))
    a = analyse_latents(z, AnalysisSettings(n_clusters=4, n_points=3), truth=t)
    a.learning_curves, a.learning_axis = {"objective": np.linspace(5.0, 1.0, 12)}, "iteration"
    a.run_info = {"run": "synthetic", "method": "test"}
    write_analysis_report(a, tmp_path)
    n, problems = page_problems(browser, tmp_path / REPORT_NAME)
    assert problems == []
    assert n >= 8  # density, truth, clusters, landscape, two trajectories, outliers, learning curve


def test_run_report_with_volumes_loads_cleanly(browser, tmp_path):
    from cryoscape.analysis.pipeline import AnalysisSettings, GeneratedVolume, analyse_latents
    from cryoscape.report.run_report import REPORT_NAME, write_analysis_report

    rng = np.random.default_rng(2)
    t = rng.random(200)
    a = analyse_latents(np.stack([t, t ** 2], axis=1) + 0.05 * rng.standard_normal((200, 2)),
                        AnalysisSettings(n_clusters=2, n_points=3))
    c = np.arange(16) - 8
    z, y, x = np.meshgrid(c, c, c, indexing="ij")
    ball = lambda dx: np.exp(-((x - dx) ** 2 + y ** 2 + z ** 2) / 8.0).astype(np.float32)
    a.volumes = [GeneratedVolume(f"cluster_{j:03d}", np.zeros(2), ball(2 * j), 2.0, "model") for j in range(2)]
    a.volumes += [GeneratedVolume(f"pc{k}_{j:02d}", np.zeros(2), ball(j - 1), 2.0, "model") for k in (1, 2) for j in range(3)]
    a.run_info = {"run": "synthetic-volumes", "method": "test"}
    write_analysis_report(a, tmp_path)
    n, problems = page_problems(browser, tmp_path / REPORT_NAME)
    assert problems == []
    assert n >= 9 and (tmp_path / "volumes.png").is_file() and (tmp_path / "volumes_pc2.png").is_file()
    assert (tmp_path / REPORT_NAME).stat().st_size < 3_000_000  # small figures keep the report small


def test_bench_report_loads_cleanly(browser, tmp_path):
    from cryoscape.bench.report import write_results
    from cryoscape.bench.runner import BenchmarkResult, MethodResult, ScoreSummary

    rng = np.random.default_rng(1)

    def summary(level: float) -> ScoreSummary:
        return ScoreSummary(level + 0.05 * rng.standard_normal(20), np.linspace(1.0, level, 17))

    pca = MethodResult("pca", summary(0.5), wall_s=12.0, spearman_abs=0.9, knn_preservation=0.3, knn_chance=0.01,
                       outlier_roc_auc=0.93)
    refs = [MethodResult("consensus", summary(0.45), wall_s=1.0), MethodResult("oracle", summary(0.6), wall_s=3.0)]
    res = BenchmarkResult("adk-junk", tmp_path, 1000, 32, 3.0, np.arange(20), np.arange(20) % 98, [pca], refs)
    files = write_results(res)
    n, problems = page_problems(browser, files["html"])
    assert problems == []
    assert n == 2  # per-image AUC boxes, mean FSC curves
