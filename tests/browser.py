"""Headless Chromium from Debian's packages (``chromium``, ``chromium-driver``) driven by
selenium, for the tests that look at our pages the way a person does. Selenium is pointed at
the installed driver, so it never tries to download one."""
from __future__ import annotations

import contextlib
import importlib.util
import os
import shutil
from pathlib import Path
from typing import Iterator, Optional

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
