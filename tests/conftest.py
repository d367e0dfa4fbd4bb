"""Shared fixtures: the synthetic dataset and tiny models, built once per test session."""
from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

import pytest  # noqa: E402


@pytest.fixture(scope="session")
def syn_root(tmp_path_factory):
    from rollout.config import SyntheticDataConfig
    from rollout.data.synthetic import make_dataset

    return make_dataset(tmp_path_factory.mktemp("syn"), seed=0, cfg=SyntheticDataConfig(size=64))


@pytest.fixture(scope="session")
def syn_root96(tmp_path_factory):
    """The CPU preset's image size: the judge is calibrated at 96 px (marks of a few pixels
    at 64 px are ambiguous), so tests of what it passes use this one."""
    from rollout.config import SyntheticDataConfig
    from rollout.data.synthetic import make_dataset

    return make_dataset(tmp_path_factory.mktemp("syn96"), seed=0, cfg=SyntheticDataConfig(size=96))


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory):
    from policy.tiny import build_tiny_models

    return build_tiny_models(tmp_path_factory.mktemp("tiny"))


@pytest.fixture(scope="session")
def tok(tiny_models):
    """The tiny text policy's tokenizer."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_models["text"])


@pytest.fixture(scope="module")
def tools():
    """The five tools in-process (no Ray), one set per test module: their stats stay local to it."""
    from tests.scripted import local_tools

    return local_tools()


@pytest.fixture(scope="session")
def ray_local():
    """One local Ray for the session; logical CPUs sized so fractional actors never starve."""
    import ray

    ray.init(address="local", num_cpus=8, include_dashboard=False, log_to_driver=False, configure_logging=False,
             namespace="anomalyagent-tests")
    yield ray
    ray.shutdown()


@pytest.fixture(scope="session")
def tiny_inpaint(tmp_path_factory):
    from actors.tiny import save_tiny_inpaint_pipeline

    return save_tiny_inpaint_pipeline(tmp_path_factory.mktemp("inpaint") / "pipe")


@pytest.fixture(scope="session")
def pill():
    from rollout.data.synthetic import normal_image

    return normal_image("syn_pill", 1, 96)


@pytest.fixture(scope="session")
def marble():
    from rollout.data.synthetic import normal_image

    return normal_image("syn_marble", 1, 96)
