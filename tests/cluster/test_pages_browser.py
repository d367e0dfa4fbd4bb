"""The viewer and the rating page in a real browser (headless Chromium): the images and scores a
person sees are the stored ones, and three samples rated with the keyboard are read back."""
from pathlib import Path
from typing import Optional

import numpy as np
import pytest
from PIL import Image

from cluster.rating_store import REASONS, RatingStore, generated_samples, real_samples
from cluster.viewer_data import RunsView
from cluster.web_pages import ServerThread, rating_app, viewer_app
from rollout.data import open_dataset
from tests import browser

pytestmark = [pytest.mark.slow, pytest.mark.skipif(browser.missing() is not None, reason=str(browser.missing()))]


def _wait(driver, cond, timeout=20):
    """Until ``cond`` holds; an element the page re-rendered under us is looked up again."""
    from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, timeout, poll_frequency=0.05,
                         ignored_exceptions=(NoSuchElementException, StaleElementReferenceException)).until(cond)


def _expected_canvas(image: Path, mask: Optional[Path], scale: int) -> np.ndarray:
    """What viewer.html draws: the image scaled up by ``scale``, the mask's outline in green."""
    img = np.asarray(Image.open(image).convert("RGB"))
    if mask is None:
        return img.repeat(scale, 0).repeat(scale, 1)
    on = np.asarray(Image.open(mask).convert("L")) > 127
    pad = np.pad(on, 1, constant_values=False)
    inner = pad[:-2, 1:-1] & pad[2:, 1:-1] & pad[1:-1, :-2] & pad[1:-1, 2:]
    edge = on & ~inner
    out = img.copy()
    out[edge] = (0, 255, 0)
    return out.repeat(scale, 0).repeat(scale, 1)


def _canvas_pixels(driver, index: int) -> np.ndarray:
    w, h, data = driver.execute_script(
        "const c = document.querySelectorAll('#main canvas')[arguments[0]];"
        "const d = c.getContext('2d').getImageData(0, 0, c.width, c.height);"
        "return [c.width, c.height, Array.from(d.data)];", index)
    return np.asarray(data, np.uint8).reshape(h, w, 4)[..., :3]


def test_viewer_in_a_browser_shows_the_stored_images_and_scores(runs, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    view = RunsView(runs)
    stored = view.episode("train/trajectories", "s0-syn_pill-crack-0-g1")
    with ServerThread(viewer_app(runs)) as s, browser.chromium() as d:
        d.get(s.url)
        _wait(d, lambda d: len(d.find_elements(By.CSS_SELECTOR, "#store option")) == 2)
        Select(d.find_element(By.ID, "store")).select_by_visible_text("train/trajectories")
        _wait(d, lambda d: d.find_element(By.ID, "count").text == "2 episodes")
        d.find_element(By.ID, "reward_min").send_keys("1")
        d.find_element(By.ID, "apply").click()
        _wait(d, lambda d: d.find_element(By.ID, "count").text == "1 episodes")
        d.find_element(By.CSS_SELECTOR, "tr.ep").click()
        _wait(d, lambda d: d.find_element(By.CSS_SELECTOR, "#main h3").text == "s0-syn_pill-crack-0-g1")
        main = d.find_element(By.ID, "main").text
        qe = stored["images"][1]["qe"]
        assert f"QE {qe['location_score']:.3f} / {qe['quality_score']:.3f} pass" in main
        assert "advantage 0.707" in main and "total 1.500" in main and "I need a prompt for the crack." in main
        assert "turn 2: image_gen" in main and '"prompt":"a dark crack"' in main
        for k, im in enumerate(stored["images"]):  # every pixel drawn is the stored one (mask outlined)
            want = _expected_canvas(view.file("train/trajectories", im["path"]),
                                    view.file("train/trajectories", im["mask"]) if im["mask"] else None, 2)
            _wait(d, lambda d: _canvas_pixels(d, k).shape == want.shape and (_canvas_pixels(d, k) == want).all())
        browser.screenshot(d, "viewer_episode", tmp_path)
        d.find_element(By.ID, "grp").click()
        _wait(d, lambda d: d.find_element(By.CSS_SELECTOR, "#main h3").text == "group s0-syn_pill-crack-0")
        boxes = [b.text for b in d.find_elements(By.CSS_SELECTOR, ".group > div")]
        assert ["advantage -0.707" in boxes[0], "advantage 0.707" in boxes[1]] == [True, True]
        assert "turn_cap · prompt_gen → image_gen" in boxes[0] and "answer · prompt_gen → image_gen" in boxes[1]
        browser.screenshot(d, "viewer_group", tmp_path)
    assert (tmp_path / "viewer_episode.png").read_bytes()[:4] == b"\x89PNG"


def test_rating_three_samples_with_the_keyboard(samples, syn_root, tmp_path):
    from selenium.webdriver.common.by import By

    store = RatingStore(tmp_path / "ratings.db")
    store.add_samples(generated_samples(samples / "agent", "agent") + generated_samples(samples / "fixed", "baseline")
                      + real_samples(open_dataset("mvtec", syn_root), {("syn_pill", "crack"): 2}))
    with ServerThread(rating_app(store)) as s, browser.chromium() as d:
        d.get(s.url)
        d.find_element(By.ID, "rater").send_keys("ann")
        d.find_element(By.ID, "start").click()
        progress = lambda n: (lambda d: d.find_element(By.ID, "progress").text == f"{n} of 7 rated")  # noqa: E731
        _wait(d, progress(0))
        _wait(d, lambda d: d.execute_script("return document.getElementById('image').naturalWidth") > 0)
        body = d.find_element(By.TAG_NAME, "body")
        body.send_keys("m")  # the mask, on a key press
        assert d.find_element(By.ID, "mask").value_of_css_property("display") == "block"
        shown = []
        for n, keys in enumerate(["1b", "g", "g"]):  # reason 1 then bad; good; good
            shown.append(d.execute_script("return new URL(document.getElementById('image').src).pathname.split('/').pop()"))
            body.send_keys(keys)
            _wait(d, progress(n + 1))
        _wait(d, lambda d: sum(int(r.find_elements(By.TAG_NAME, "td")[1].text)
                      for r in d.find_elements(By.CSS_SELECTOR, "#results tr")[1:]) == 3)
        browser.screenshot(d, "rating", tmp_path)
    got = {r["sample"]: (r["verdict"], r["reason"]) for r in RatingStore(tmp_path / "ratings.db").ratings()}
    assert got == {shown[0]: ("bad", REASONS[0]), shown[1]: ("good", None), shown[2]: ("good", None)}
