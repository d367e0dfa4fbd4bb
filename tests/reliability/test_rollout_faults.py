"""Faults during rollout: a tool actor, a rollout worker and the generation engine are each
SIGKILLed during a 32-episode rollout; every episode is stored exactly once."""
import pytest

from cluster.bench_faults import rollout_faults
from tests.small_config import small_cfg

pytestmark = [pytest.mark.reliability, pytest.mark.ray, pytest.mark.slow]


def test_three_kills_lose_and_duplicate_nothing(ray_local, syn_root, tiny_models):
    cfg = small_cfg(**{"data.target_categories": "[syn_pill,syn_marble]"})
    figures = rollout_faults(cfg, str(tiny_models["text"]), str(syn_root))
    base, faults = figures["baseline"], figures["faults"]
    print(f"rollout faults: {figures}")
    assert base["episodes"] == faults["episodes"] == 32
    assert faults["killed"] == ["tool", "worker", "engine"]
    assert faults["stored"] == 32 and faults["lost"] == 0 and faults["duplicates"] == 0
    assert base["stored"] == 32 and base["retried"] == 0
    assert faults["retried"] >= 1 and sum(faults["retry_reasons"].values()) == faults["retried"]
