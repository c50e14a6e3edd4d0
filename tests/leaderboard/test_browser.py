"""The leaderboard in a real browser: `harness leaderboard` serves it, headless Chromium renders it.

Saves a screenshot of the overview to test-artifacts/leaderboard-overview.png, and one per view
(opened in one browser session on a store with data for every view) under pytest's tmp_path. Needs
Debian's chromium and chromium-driver (`./run test` installs them); skipped only when no chromium
binary exists.
"""

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from contextlib import contextmanager
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


@contextmanager
def serving(store_url: str, home: Path):
    """`harness leaderboard` on the store, on a free port of 127.0.0.1; yields its URL."""
    port = free_port()
    server = subprocess.Popen(
        [*harness_command(), "leaderboard", "--store", store_url, "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "HOME": str(home)},  # Streamlit writes its machine id under ~/.streamlit
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
def served(store_url, tmp_path):
    with serving(store_url, tmp_path) as url:
        yield url


@contextmanager
def chromium(profile: Path):
    """Headless Chromium driven by selenium, its profile in `profile`."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in [*CHROMIUM_FLAGS, f"--user-data-dir={profile}"]:
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture
def browser(tmp_path):
    with chromium(tmp_path / "chromium-profile") as driver:
        yield driver


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


# ---------------------------------------------------------------- every view, one browser session


@pytest.fixture
def full_store_url(curve_store_url):
    """conftest's store (its TIES-SV merge has conflict statistics) with a Uyghur checkpoint series
    (Checkpoint curves), plus what the other views draw: a merge over two languages (Multi-language),
    a 2x2 sweep (Sweeps), language vectors, a maintenance experiment (Maintenance)."""
    store_url = curve_store_url
    from harness.store import ModelRecord, ResultStore, write_maintenance, write_similarities
    from tests.leaderboard.test_maintenance import STEPS
    from tests.leaderboard.conftest import result_row
    from tests.leaderboard.test_similarity import pairs
    from tests.leaderboard.test_sweeps import store_trials

    store = ResultStore(store_url)
    recipe = {"merge_method": "ties", "base_model": "base",
              "models": [{"model": m, "parameters": {"weight": 1.0, "density": 0.6}} for m in ("sft-flan", "ct-mvf", "ct-uig")]}
    store.record_model(ModelRecord("hash-mvf-uig", "ties-mvf-uig-flan", "merge", ("mvf", "uig"), recipe))
    store.write_task_results([result_row("ties-mvf-uig-flan", "hash-mvf-uig", short, value, n=n) for short, value, n in
                              (("mlic_tc_uig", 0.78, 50), ("mlic_math_uig", 0.35, 20), ("mlic_tc_mvf", 0.5, 50))])
    write_similarities(store, pairs({("ct-tam", "ct-tel"): 0.52, ("ct-tam", "ct-uig"): 0.43, ("ct-tel", "ct-uig"): -0.38}))
    write_maintenance(store, "uig-x2", "uig", 2, STEPS)
    store.engine.dispose()
    store_trials(store_url, {(0.2, 0.4): 0.30, (0.8, 0.4): 0.50, (0.2, 0.8): 0.40, (0.8, 0.8): 0.45})
    return store_url


# View -> (its header, how many charts it draws: a chart's element must render at a non-zero size).
VIEW_CHECKS = {
    "Overview": ("Overview (test)", 0),
    "Per language": ("Tamil (test)", 1),  # the average per model, as bars
    "Model": ("ties-sv-uig-flan", 2),  # its conflicts by tensor type and by layer (chosen below)
    "Compare": ("ct-uig − base (test)", 0),
    "Multi-language": ("Multi-language merges: Mongolian (traditional script) + Uyghur (test)", 0),
    "Sweeps": ("Sweeps (dev)", 2),  # the sweep's heatmap, then every TIES-SV merge's slack
    "Language vectors": ("Language vectors: cosine similarity", 1),
    "Maintenance": ("Maintenance cost (Table 2 of Dmonte et al.)", 0),
    "Checkpoint curves": ("Checkpoint curves (test)", 1),  # Uyghur's CT-X and TIES-X against CT tokens
}


def test_every_view_renders_its_tables_and_charts_in_chromium(full_store_url, browser, tmp_path):
    from leaderboard.views import SNAPSHOT_VIEWS, VIEWS

    assert set(VIEW_CHECKS) == {*VIEWS, *SNAPSHOT_VIEWS}  # a new view gets its check here
    render_every_view(full_store_url, browser, tmp_path, VIEW_CHECKS, model="ties-sv-uig-flan")


def render_every_view(store_url: str, browser, tmp_path, checks: dict[str, tuple[str, int]], *, model: str,
                      split: str | None = None) -> list[Path]:
    """Open each view of `checks` in one browser session (on `split` if given, the Model view on
    `model`), wait until it shows its header, a table and its charts each drawn at a non-zero size and
    not blank, and save a screenshot of it under tmp_path; returns the screenshots."""
    from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    shots = []
    with serving(store_url, tmp_path) as url:
        browser.get(url)
        wait = WebDriverWait(browser, 60, ignored_exceptions=(NoSuchElementException, StaleElementReferenceException))
        if split is not None:
            choose(browser, wait, "Split", split, area="stSidebar")
        for view, (header, n_charts) in checks.items():
            option = f'//*[@data-testid="stSidebar"]//label[normalize-space()="{view}"]'
            wait.until(lambda driver: driver.find_element(By.XPATH, option)).click()
            if view == "Model":
                choose(browser, wait, "Model", model)
            # Streamlit may still replace what was found (a rerun after the selectbox, a chart redrawn at
            # its final width): the whole check is the wait's condition, which retries on stale elements.
            wait.until(lambda driver: shown(driver, header, n_charts),
                       f"{view} was not drawn (its header, a table, {n_charts} charts, none blank)")
            shot = tmp_path / f"leaderboard-{view.lower().replace(' ', '-')}.png"
            assert browser.save_screenshot(str(shot)) and colours(shot.read_bytes()) > 2, view
            shots.append(shot)
    return shots


def choose(browser, wait, label: str, option: str, area: str = "stMain") -> None:
    """Pick `option` in the selectbox labelled `label` of the main area (or the sidebar: `area`
    "stSidebar"): type it, then Enter."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    box = wait.until(lambda driver: driver.find_element(
        By.XPATH, f'//*[@data-testid="{area}"]//*[@data-testid="stSelectbox"][.//label[normalize-space()="{label}"]]'))
    box.find_element(By.CSS_SELECTOR, "input").send_keys(option, Keys.ENTER)


def drawn(driver, header: str, n_charts: int) -> tuple | bool:
    """(the first table, the charts) once the script has finished (no "Running…/Stop" widget, no
    element left over from the previous view: Streamlit marks those data-stale) and the page shows
    `header`, a table and exactly `n_charts` charts, each drawn by Vega (its canvas or SVG at a
    non-zero size); else False (wait on)."""
    from selenium.webdriver.common.by import By

    if driver.find_elements(By.CSS_SELECTOR, '[data-testid="stStatusWidget"], [data-stale="true"]'):
        return False
    main = driver.find_element(By.CSS_SELECTOR, '[data-testid="stMain"]')
    if header not in [h.text.strip() for h in main.find_elements(By.CSS_SELECTOR, "h2")]:
        return False
    tables = [t for t in main.find_elements(By.CSS_SELECTOR, '[data-testid="stTable"]') if has_size(t)]
    charts = main.find_elements(By.CSS_SELECTOR, '[data-testid="stVegaLiteChart"]')
    painted = [c for c in charts if any(has_size(e) for e in c.find_elements(By.CSS_SELECTOR, "canvas, svg.marks"))]
    if not tables or len(painted) != n_charts or len(charts) != n_charts:
        return False
    return tables[0], painted


def shown(driver, header: str, n_charts: int) -> bool:
    """`drawn`, every chart showing more than one colour (a blank chart waits on), and the first chart
    (or the table) scrolled into the picture."""
    found = drawn(driver, header, n_charts)
    if not found or any(colours(chart.screenshot_as_png) <= 2 for chart in found[1]):
        return False
    table, charts = found
    driver.execute_script("arguments[0].scrollIntoView()", charts[0] if charts else table)
    return True


def has_size(element) -> bool:
    return element.size["width"] > 0 and element.size["height"] > 0


def colours(png: bytes) -> int:
    """How many distinct colours a PNG holds (1: blank)."""
    import io

    from PIL import Image

    with Image.open(io.BytesIO(png)) as image:
        return len(image.convert("RGB").getcolors(maxcolors=1 << 24))
