"""Torn and corrupt files against their readers, the endpoint's auth over real HTTP, and the
agent's retry of a replica that died under a request."""
import asyncio

import pytest
import ray

from cluster import serve_app
from cluster.fault_files import corrupt_files_check
from tests.small_config import small_cfg

pytestmark = [pytest.mark.reliability]


def test_every_damaged_file_is_detected_by_its_reader(tiny_models):
    assert corrupt_files_check(str(tiny_models["text"])) == {
        "torn_parquet": True, "half_png": True, "corrupt_weights": True, "tracker_missing_step": True,
        "disk_full_keeps_previous": True}


class _Dies:
    def __init__(self, failures, exc):
        self.calls, self.failures, self.exc = 0, failures, exc

    async def __call__(self):
        self.calls += 1
        if self.calls <= self.failures:
            raise self.exc
        return "ok"


def test_a_dead_replica_is_retried_then_unavailable(monkeypatch):
    monkeypatch.setattr(serve_app, "RETRY_DELAYS_S", (0.0, 0.0))
    gone = ray.exceptions.ActorDiedError()
    flaky = _Dies(2, gone)
    assert asyncio.run(serve_app.call_with_retry("tool image_gen", flaky)) == "ok" and flaky.calls == 3
    dead = _Dies(99, gone)
    with pytest.raises(serve_app.Unavailable, match="tool image_gen is unavailable: ActorDiedError"):
        asyncio.run(serve_app.call_with_retry("tool image_gen", dead))
    assert dead.calls == 3
    bug = _Dies(1, KeyError("x"))  # not a lost replica: no retry, the error stays what it is
    with pytest.raises(KeyError):
        asyncio.run(serve_app.call_with_retry("tool image_gen", bug))
    assert bug.calls == 1


@pytest.mark.ray
@pytest.mark.slow
def test_no_request_without_a_valid_key_gets_in(ray_local, tiny_models):
    from cluster.fault_auth import ATTEMPTS, auth_check

    out = auth_check(small_cfg(**{"episode.max_turns": 2}), str(tiny_models["text"]))
    print(f"auth: {out}")
    assert out["refused"] == {name: 401 for name in ATTEMPTS} and out["unauthorized_accepted"] == 0
    assert out["valid_key"] == [200, 200] and out["over_burst"] == 429 and int(out["over_burst_retry_after"]) >= 1
    assert out["healthz_open"]
