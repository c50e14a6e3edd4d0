"""The leaderboard in a real browser: `harness leaderboard` serves it, headless Chromium renders it.

Saves screenshots to test-artifacts/leaderboard-overview.png and leaderboard-curves.png. Needs Debian's chromium and
chromium-driver (`./run test` installs them); skipped only when no chromium binary exists.
"""

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from harness.paths import PROJECT_ROOT

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
ARTIFACTS = PROJECT_ROOT / "test-artifacts"
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--window-size=1400,900",
]

pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="no chromium binary (apt-get install chromium chromium-driver)")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def harness_command() -> list[str]:
    script = Path(sys.executable).with_name("harness")
    return [str(script)] if script.exists() else [sys.executable, "-m", "harness.cli"]


def wait_until_serving(url: str, server: subprocess.Popen, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise AssertionError(f"harness leaderboard exited with {server.returncode}: {server.stdout.read()}")
        try:
            with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as answer:
                if answer.status == 200:
                    return
        except OSError:
            time.sleep(0.3)
    raise AssertionError(f"the leaderboard did not answer at {url} within {timeout} s")


@pytest.fixture
def served(store_url, tmp_path):
    yield from serve(store_url, tmp_path)


@pytest.fixture
def served_curves(curve_store_url, tmp_path):
    yield from serve(curve_store_url, tmp_path)


def serve(store_url: str, tmp_path: Path):
    """`harness leaderboard` over the store until the test ends; yields its URL."""
    port = free_port()
    server = subprocess.Popen(
        [*harness_command(), "leaderboard", "--store", store_url, "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "HOME": str(tmp_path)},  # Streamlit writes its machine id under ~/.streamlit
    )
    try:
        url = f"http://127.0.0.1:{port}"
        first_line = server.stdout.readline()
        assert first_line.startswith(f"Leaderboard: {url}"), first_line + server.stdout.read(4000)
        wait_until_serving(url, server)
        yield url
    finally:
        server.terminate()
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


@pytest.fixture
def browser(tmp_path):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in [*CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'chromium-profile'}"]:
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    try:
        yield driver
    finally:
        driver.quit()


def test_overview_renders_in_chromium(served, browser):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ready
    from selenium.webdriver.support.ui import WebDriverWait

    browser.get(served)
    table_css = '[data-testid="stTable"] table'
    WebDriverWait(browser, 60).until(ready.text_to_be_present_in_element((By.CSS_SELECTOR, table_css), "Average"))
    table = browser.find_element(By.CSS_SELECTOR, table_css)
    headers = [th.text.strip() for th in table.find_elements(By.CSS_SELECTOR, "thead th")]
    assert headers[-6:] == ["Kind", "n", "Tamil", "Telugu", "Uyghur", "Average"]
    rows = {
        row.find_element(By.CSS_SELECTOR, "th").text.strip(): row.find_elements(By.CSS_SELECTOR, "td")
        for row in table.find_elements(By.CSS_SELECTOR, "tbody tr")
    }
    # The default rows: Table 3's recipe families (ids drawn as typed, through the Markdown escapes).
    assert list(rows) == ["base", "CT-X", "sft-flan", "TIES-X", "TIES-SV-X"]
    uyghur = headers[-6:].index("Uyghur")
    best, second = rows["TIES-SV-X"][uyghur], rows["TIES-X"][uyghur]
    assert (best.text, second.text) == ("61.0", "60.0")
    # Checked on the drawn text, not the cell: Streamlit wraps it in an inline-block of its own.
    best_text, second_text = (cell.find_element(By.CSS_SELECTOR, "p") for cell in (best, second))
    assert int(best_text.value_of_css_property("font-weight")) >= 700
    assert "underline" in second_text.value_of_css_property("text-decoration-line")
    assert "underline" not in best_text.value_of_css_property("text-decoration-line")
    assert rows["CT-X"][headers[-6:].index("Average")].text == "–"
    time.sleep(1)  # let the sidebar and fonts settle before the picture
    ARTIFACTS.mkdir(exist_ok=True)
    assert browser.save_screenshot(str(ARTIFACTS / "leaderboard-overview.png"))


def test_checkpoint_curves_render_in_chromium(served_curves, browser):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ready
    from selenium.webdriver.support.ui import WebDriverWait

    browser.get(served_curves)
    options = '[data-testid="stSidebar"] [role="radiogroup"] label'
    WebDriverWait(browser, 60).until(ready.text_to_be_present_in_element((By.CSS_SELECTOR, '[data-testid="stSidebar"]'),
                                                                         "Checkpoint curves"))
    next(label for label in browser.find_elements(By.CSS_SELECTOR, options) if label.text.strip() == "Checkpoint curves").click()
    chart = WebDriverWait(browser, 60).until(ready.visibility_of_element_located(
        (By.CSS_SELECTOR, '[data-testid="stVegaLiteChart"] canvas, [data-testid="stVegaLiteChart"] svg')))
    WebDriverWait(browser, 30).until(lambda _: chart.size["width"] > 100 and chart.size["height"] > 100)
    assert "Uyghur" in browser.find_element(By.CSS_SELECTOR, '[data-testid="stMain"], section.main').text
    time.sleep(1)  # let the chart finish drawing before the picture
    ARTIFACTS.mkdir(exist_ok=True)
    assert browser.save_screenshot(str(ARTIFACTS / "leaderboard-curves.png"))
