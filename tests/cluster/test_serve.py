"""The Ray Serve endpoint over real HTTP on 127.0.0.1, with the tiny policy and CPU tools."""
import asyncio
import base64
import io
import time

import httpx
import numpy as np
import pytest
from PIL import Image

from benchmarks.bad_requests import b64, corpus, encode
from tests.local_head import free_port
from tests.small_config import small_cfg

pytestmark = [pytest.mark.ray, pytest.mark.slow]


@pytest.fixture(scope="module")
def server(ray_local, tiny_models):
    from ray import serve

    from cluster.serve_app import start_serve

    from benchmarks.baselines import PipelineEngine

    policy = str(tiny_models["text"])
    cfg = small_cfg(**{"serve.port": free_port(), "episode.max_turns": 3, "synthesize.tool_chain_fallback": True,
                       "synthesize.max_attempts": 2})
    url = start_serve(cfg, policy)
    tight = small_cfg(**{"serve.port": cfg.serve.port, "serve.max_ongoing_requests": 1,
                         "serve.max_queued_requests": 1, "episode.max_turns": 3, "synthesize.tool_chain_fallback": True})
    tight_url = start_serve(tight, policy, name="tight", route_prefix="/tight")
    piped = small_cfg(**{"serve.port": cfg.serve.port, "episode.max_turns": 6, "episode.max_turn_tokens": 120,
                         "synthesize.max_attempts": 2, "policy.engine.num_cpus": 0.1})  # a pipeline is no model
    pg_url = start_serve(piped, policy, name="pg", route_prefix="/pg", engine=(PipelineEngine, (policy, "pg")))
    fixed_url = start_serve(piped, policy, name="fixed", route_prefix="/fixed", engine=(PipelineEngine, (policy, "fixed")))
    yield {"url": url, "tight": tight_url, "pg": pg_url, "fixed": fixed_url}
    serve.shutdown()


def decode(s: str) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(s))))


def test_good_request_returns_the_samples_that_passed_and_counts_the_rest(server, pill):
    r = httpx.post(server["url"] + "/v1/synthesize", timeout=120, json={
        "image": b64(encode(pill.image)), "category": "syn_pill", "defect_type": "crack", "n": 2, "seed": 3})
    assert r.status_code == 200, r.text
    out = r.json()
    assert len(out["images"]) == len(out["masks"]) == len(out["trajectories"]) == 2 - out["failed"]
    assert len(out["failures"]) == out["failed"]
    for img, mask in zip(out["images"], out["masks"]):
        assert decode(img).shape == pill.image.shape and decode(mask).shape == pill.image.shape[:2]
        assert (decode(mask) > 0).any()  # an empty mask is never an anomaly
    for t in out["trajectories"]:
        assert t["status"] in ("answer", "turn_cap", "token_cap") and t["turns"] >= 1 and t["text"]
        assert t["source"] in ("agent", "agent_choice_tool_mask", "agent_fallback_choice", "tool_chain")
        assert t["gate"][-1]["passed"] is True


def test_the_gate_keeps_the_right_defect_and_refuses_the_wrong_one(server, pill):
    """PG's prompt (a dark crack) passes as a crack; the fixed prompt 'a stain on the
    syn_pill' paints a dark spot, which the judge refuses as a (red) stain, every attempt."""
    body = {"image": b64(encode(pill.image)), "category": "syn_pill", "defect_type": "crack", "n": 2, "seed": 0}
    good = httpx.post(server["pg"] + "/v1/synthesize", timeout=120, json=body).json()
    assert good["failed"] == 0 and len(good["images"]) == 2
    assert all(t["source"] == "agent" and t["actions"][:2] == ["prompt_gen", "image_gen"] for t in good["trajectories"])
    bad = httpx.post(server["fixed"] + "/v1/synthesize", timeout=120, json={**body, "defect_type": "stain", "n": 1}).json()
    assert bad["images"] == [] and bad["failed"] == 1
    attempts = bad["failures"][0]["attempts"]
    assert len(attempts) == 2 and all(a["reason"] == "qe_fail" and "red" in a["qe"]["review"] for a in attempts)


def test_multipart_upload_with_a_mask_puts_the_defect_inside_it(server, pill):
    h, w = pill.image.shape[:2]
    mask = np.zeros((h, w), np.uint8)
    mask[30:66, 24:60] = 255
    r = httpx.post(server["pg"] + "/v1/synthesize", timeout=120,
                   data={"category": "syn_pill", "defect_type": "crack", "n": "1", "seed": "1"},
                   files={"image": ("n.jpg", encode(pill.image, "JPEG"), "image/jpeg"),
                          "mask": ("m.png", encode(mask), "image/png")})
    assert r.status_code == 200, r.text
    assert len(r.json()["images"]) == 1
    for img in r.json()["images"]:
        changed = np.any(decode(img).astype(int) != np.asarray(
            Image.open(io.BytesIO(encode(pill.image, "JPEG")))).astype(int), axis=2)
        assert changed.any() and not changed[mask == 0].any()  # edits only inside the user's mask


def test_every_bad_input_gets_its_4xx_and_the_server_stays_healthy(server, pill):
    failures = []
    with httpx.Client(timeout=60) as client:
        for name, kwargs, status, word in corpus(pill.image):
            r = client.post(server["url"] + "/v1/synthesize", **kwargs)
            if r.status_code != status or word not in r.text:
                failures.append((name, r.status_code, r.text[:200]))
        assert not failures, failures
        health = client.get(server["url"] + "/healthz")
    assert health.status_code == 200 and set(health.json()["tools"]) == {
        "prompt_gen", "image_gen", "quality_eval", "knowledge", "mask_gen"}


async def _concurrent(url: str, body: dict, n: int):
    async with httpx.AsyncClient(timeout=300) as client:
        async def one():
            t0 = time.perf_counter()
            r = await client.post(url + "/v1/synthesize", json=body)
            return r.status_code, time.perf_counter() - t0
        return await asyncio.gather(*(one() for _ in range(n)))


def test_32_concurrent_requests_get_no_5xx(server, pill):
    body = {"image": b64(encode(pill.image)), "category": "syn_pill", "defect_type": "stain", "n": 1}
    results = asyncio.run(_concurrent(server["url"], body, 32))
    codes = [c for c, _ in results]
    lat = np.array([t for _, t in results])
    print(f"serve_32_concurrent p50={np.percentile(lat, 50):.2f}s p99={np.percentile(lat, 99):.2f}s codes={set(codes)}")
    assert codes == [200] * 32
    stats = httpx.get(server["url"] + "/healthz", timeout=30).json()
    assert stats["policy"]["mean_batch"] > 1  # concurrent episodes' turns shared engine batches


def test_backpressure_answers_503_not_a_crash(server, pill):
    body = {"image": b64(encode(pill.image)), "category": "syn_pill", "defect_type": "stain", "n": 1}
    codes = [c for c, _ in asyncio.run(_concurrent(server["tight"], body, 10))]
    assert set(codes) <= {200, 503} and 503 in codes and 200 in codes, codes
    assert httpx.get(server["tight"] + "/healthz", timeout=30).status_code == 200


def test_openapi_schema_documents_both_body_types(server):
    spec = httpx.get(server["url"] + "/openapi.json", timeout=30).json()
    body = spec["paths"]["/v1/synthesize"]["post"]["requestBody"]["content"]
    assert set(body) == {"application/json", "multipart/form-data"}
    assert body["application/json"]["schema"]["required"] == ["image", "category", "defect_type"]
