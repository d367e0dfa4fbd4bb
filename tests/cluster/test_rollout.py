"""The rollout manager on a real local Ray cluster."""
import os
import signal

import pytest
import ray

from cluster.runtime import start_runtime
from rollout.data import MVTecAD
from rollout.store import TrajectoryStore
from rollout.tasks import make_tasks
from tests.fake_engine import ScriptedEngine
from tests.scripted import WELL_FORMED
from tests.small_config import small_cfg

pytestmark = [pytest.mark.ray, pytest.mark.slow]


def test_sixteen_episodes_with_the_tiny_policy(ray_local, syn_root, tiny_models, tmp_path):
    cfg = small_cfg()
    tasks = make_tasks(MVTecAD(syn_root), ["syn_pill", "syn_marble"], per_defect=2, seed=1)[:8]
    rt = start_runtime(cfg, str(tiny_models["text"]), tmp_path)
    try:
        report = rt.manager.run(rt.manager.specs(tasks), progress=False)
    finally:
        rt.shutdown()
    assert (report.episodes, report.stored, report.lost) == (16, 16, 0)
    df = TrajectoryStore(tmp_path).read()
    assert len(df) == 16 and df.episode_id.is_unique
    for _, row in df.iterrows():
        assert len(row.response_ids) == len(row.response_mask) == len(row.response_logprobs)
        policy_lp = [lp for lp, m in zip(row.response_logprobs, row.response_mask) if m]
        assert policy_lp and all(lp <= 0 for lp in policy_lp) and any(lp < 0 for lp in policy_lp)
        assert row.turns >= 1 and row.status in ("answer", "turn_cap", "token_cap") and row.node_id
    assert set(df.group) == {t.task_id for t in tasks}


def test_a_vision_language_policy_through_the_manager(ray_local, syn_root, tiny_models, tmp_path):
    """The tiny Qwen2.5-VL policy: images reach the engine actor and are recorded per episode."""
    from rollout.format import IMAGE_PAD

    cfg = small_cfg(**{"episode.max_turns": 2})
    tasks = make_tasks(MVTecAD(syn_root), ["syn_pill"], per_defect=1, seed=1)[:2]
    rt = start_runtime(cfg, str(tiny_models["vl"]), tmp_path)
    try:
        report = rt.manager.run(rt.manager.specs(tasks), progress=False)
    finally:
        rt.shutdown()
    assert (report.episodes, report.stored, report.lost) == (4, 4, 0)
    df = TrajectoryStore(tmp_path).read()
    pad = ray.get(ray.remote(_pad_id).remote(str(tiny_models["vl"]), IMAGE_PAD))
    for _, row in df.iterrows():
        shown = list(row.shown_images)
        assert shown[0] == 0 and list(row.prompt_ids).count(pad) > 0
        assert any(lp < 0 for lp, m in zip(row.response_logprobs, row.response_mask) if m)


def _pad_id(path, token):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(path).convert_tokens_to_ids(token)


def test_killing_a_worker_and_a_tool_actor_loses_and_duplicates_nothing(ray_local, syn_root, tiny_models, tmp_path):
    cfg = small_cfg(**{"episode.max_turns": 10, "episode.max_turn_tokens": 200})
    path = str(tiny_models["text"])
    engine = ray.remote(ScriptedEngine).options(num_cpus=0.1, max_concurrency=100).remote(path, WELL_FORMED)
    killed = {}

    def kill_mid_run(record, extra):
        if killed:
            return
        busy = [w for w, n in enumerate(rt.manager.load) if n > 0]
        worker = rt.manager.workers[busy[0]]
        killed["worker_pid"] = ray.get(worker.pid.remote())
        killed["tool_pid"] = ray.get(rt.tools["quality_eval"].actors[0].pid.remote())
        os.kill(killed["worker_pid"], signal.SIGKILL)
        os.kill(killed["tool_pid"], signal.SIGKILL)

    tasks = make_tasks(MVTecAD(syn_root), ["syn_pill", "syn_marble"], per_defect=2, seed=2)[:8]
    rt = start_runtime(cfg, path, tmp_path, on_episode=[kill_mid_run], engines=[engine])
    try:
        report = rt.manager.run(rt.manager.specs(tasks), progress=False)
    finally:
        rt.shutdown()
        ray.kill(engine)
    assert killed and report.retried >= 1 and report.lost == 0
    assert sum(report.retry_reasons.values()) == report.retried  # every re-run has a recorded cause
    df = TrajectoryStore(tmp_path).read()
    assert len(df) == 16 and df.episode_id.is_unique
    assert sorted(df.episode_id) == sorted(s.episode_id for s in rt.manager.specs(tasks))
    assert all(s == "answer" for s in df.status)  # every stored episode is whole
    assert (df.attempt > 1).any()
