"""Serve under load while replicas die: 16 clients; the image_gen replica and the policy
engine are SIGKILLed once each. No request gets a 500; every 503 says when to retry; health
turns unhealthy after each kill and healthy again."""
import pytest

from cluster.fault_serve import serve_under_kill
from tests.small_config import small_cfg

pytestmark = [pytest.mark.reliability, pytest.mark.ray, pytest.mark.slow]


def test_killed_replicas_under_load_give_no_500(ray_local, tiny_models):
    cfg = small_cfg(**{"episode.max_turns": 3, "synthesize.tool_chain_fallback": True})
    figures = serve_under_kill(cfg, str(tiny_models["text"]), concurrency=16, duration_s=40.0)
    print(f"serve under kill: {figures}")
    assert [k["deployment"] for k in figures["killed"]] == ["tool_image_gen", "policy"]
    assert figures["all"]["5xx"] == 0 and figures["all"]["503_without_retry_after"] == 0
    assert figures["all"]["requests"] == figures["all"]["2xx"] + figures["all"]["4xx"] + figures["all"]["503"]
    assert figures["all"]["4xx"] == 0  # every request is well-formed
    for k in figures["killed"]:
        assert (k["unhealthy"], k["healthy_again"]) == (True, True), k
    assert figures["health_ok_at_end"] and figures["health_false_alarms_before"] == 0
    assert figures["before"]["2xx"] > 0 and figures["after"]["2xx"] > 0
