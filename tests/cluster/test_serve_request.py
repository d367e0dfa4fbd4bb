"""Request checks of the Serve endpoint, without Ray: every bad input maps to its 4xx."""
import json

import numpy as np
import pytest

from cluster.serve_request import RequestError, RequestLimits, check_fields, mask_region, parse_json
from benchmarks.bad_requests import b64, corpus, encode

LIMITS = RequestLimits()


@pytest.fixture(scope="module")
def image(pill):
    return pill.image


def parse(kwargs):
    """What the endpoint does for a JSON body (multipart and content types are checked over HTTP)."""
    body = kwargs["content"] if "content" in kwargs else json.dumps(kwargs["json"]).encode()
    return parse_json(body, LIMITS)


JSON_CASES = [c for c in corpus(np.zeros((96, 96, 3), np.uint8))
              if "json" in c[1] or c[1].get("headers", {}).get("content-type") == "application/json"]


@pytest.mark.parametrize("name,kwargs,status,word", JSON_CASES, ids=[c[0] for c in JSON_CASES])
def test_bad_json_request_gets_its_status(name, kwargs, status, word, image):
    case = {c[0]: c for c in corpus(image)}[name]  # the same case built on a real image
    with pytest.raises(RequestError) as e:
        parse(case[1])
    assert e.value.status == status and word in e.value.message, e.value.message


def test_good_request_parses(image):
    req = parse_json(json.dumps({"image": b64(encode(image)), "category": "bottle", "defect_type": "broken_large",
                                 "n": 3, "seed": 9}).encode(), LIMITS)
    assert (req.category, req.defect_type, req.n, req.seed, req.region) == ("bottle", "broken_large", 3, 9, None)
    assert np.array_equal(req.image, image)


def test_jpeg_and_data_url_are_accepted(image):
    req = parse_json(json.dumps({"image": "data:image/jpeg;base64," + b64(encode(image, "JPEG")),
                                 "category": "pcb1", "defect_type": "bent"}).encode(), LIMITS)
    assert req.image.shape == image.shape


def test_mask_sets_the_region(image):
    mask = np.zeros(image.shape[:2], np.uint8)
    mask[10:20, 30:60] = 255
    req = check_fields({"category": "syn_pill", "defect_type": "crack"}, encode(image), encode(mask), LIMITS)
    assert req.region == mask_region(mask > 0) == (30 / 96, 10 / 96, 60 / 96, 20 / 96)


def test_form_fields_are_converted(image):
    req = check_fields({"category": "syn_pill", "defect_type": "crack", "n": "2", "seed": "5"}, encode(image), None,
                       LIMITS, from_form=True)
    assert (req.n, req.seed) == (2, 5)
