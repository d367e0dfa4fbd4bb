"""Headless Chromium from Debian's packages (``chromium``, ``chromium-driver``) driven by
selenium, for the tests that look at our pages the way a person does. Selenium is pointed at
the installed driver, so it never tries to download one."""
from __future__ import annotations

import contextlib
import importlib.util
import os
import shutil
from pathlib import Path
from typing import Iterator, List, Optional

CHROMIUM = ("chromium", "chromium-browser", "google-chrome")
DRIVER = ("chromedriver",)


def _which(names) -> Optional[str]:
    return next((p for p in map(shutil.which, names) if p), None)


def missing() -> Optional[str]:
    """Why no browser test can run here, or None. (`.ci/run` installs both packages.)"""
    if importlib.util.find_spec("selenium") is None:
        return "selenium is not installed (pip install -c constraints.txt -e .[test])"
    if not _which(CHROMIUM) or not _which(DRIVER):
        return "headless Chromium is not installed (apt-get install chromium chromium-driver)"
    return None


@contextlib.contextmanager
def chromium(width: int = 1280, height: int = 900) -> Iterator["object"]:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = _which(CHROMIUM)
    for arg in ("--headless=new", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
                f"--window-size={width},{height}", "--proxy-server=direct://", "--proxy-bypass-list=*"):
        opts.add_argument(arg)
    if os.geteuid() == 0:
        opts.add_argument("--no-sandbox")  # Chromium's sandbox refuses to run as root
    driver = webdriver.Chrome(service=Service(_which(DRIVER)), options=opts)
    try:
        yield driver
    finally:
        driver.quit()


def screenshot(driver, name: str, out: Path) -> Path:
    """Save a screenshot to ``out`` and, when ANOMALYAGENT_SCREENSHOTS names a folder, there too."""
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{name}.png"
    driver.save_screenshot(str(path))
    extra = os.environ.get("ANOMALYAGENT_SCREENSHOTS")
    if extra:
        Path(extra).mkdir(parents=True, exist_ok=True)
        shutil.copy(path, Path(extra) / path.name)
    return path


def page_screenshots(runs: Path, samples: Path, out: Path) -> List[Path]:
    """The README's pictures: the viewer on the richest episode of ``runs`` and the rating
    page on ``samples`` (a synthesize folder) with the mask shown, in headless Chromium."""
    import tempfile

    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select, WebDriverWait

    from cluster.rating_store import RatingStore, generated_samples
    from cluster.viewer_data import RunsView
    from cluster.web_pages import ServerThread, rating_app, viewer_app

    from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException

    wait = lambda d, cond: WebDriverWait(d, 30, poll_frequency=0.1, ignored_exceptions=(  # noqa: E731
        NoSuchElementException, StaleElementReferenceException)).until(cond)
    view, shots = RunsView(runs), []
    store = max(view.summary(), key=lambda s: s["episodes"])["store"]
    with ServerThread(viewer_app(runs)) as s, chromium(1400, 1000) as d:
        d.get(s.url)
        wait(d, lambda d: len(d.find_elements(By.CSS_SELECTOR, "#store option")) >= 1)
        Select(d.find_element(By.ID, "store")).select_by_visible_text(store)
        d.find_element(By.ID, "status").send_keys("answer")
        d.find_element(By.ID, "apply").click()
        n = len(view.episodes(store, status="answer"))  # the list of this store, not the one shown first
        wait(d, lambda d: d.find_element(By.ID, "count").text == f"{n} episodes")
        first = d.find_elements(By.CSS_SELECTOR, "tr.ep")[0]
        episode = first.find_elements(By.TAG_NAME, "td")[0].text
        first.click()
        wait(d, lambda d: d.find_element(By.CSS_SELECTOR, "#main h3").text == episode
             and d.find_elements(By.CSS_SELECTOR, "#main canvas"))
        shots.append(screenshot(d, "viewer", out))
    with tempfile.TemporaryDirectory() as tmp:
        rs = RatingStore(Path(tmp) / "r.db")
        rs.add_samples(generated_samples(samples, "agent"))
        with ServerThread(rating_app(rs)) as s, chromium(900, 900) as d:
            d.get(s.url)
            d.find_element(By.ID, "rater").send_keys("readme")
            d.find_element(By.ID, "start").click()
            wait(d, lambda d: d.execute_script("return document.getElementById('image').naturalWidth") > 0)
            d.find_element(By.TAG_NAME, "body").send_keys("m")
            shots.append(screenshot(d, "rating", out))
    return shots


if __name__ == "__main__":  # python -m tests.browser RUNS SAMPLES OUT
    import sys

    print(page_screenshots(*map(Path, sys.argv[1:4])))
