"""The small preset the Ray integration tests share: hashing embedder, 3 turns of 40 tokens,
tool actors at 0.05 CPU so that none starves on a 2-core box."""
from cluster.config import load_config


def small_cfg(**over):
    cfg = load_config(None, ["tools.knowledge.embedder=hashing", "episode.max_turns=3", "episode.max_turn_tokens=40",
                             "rollout.num_workers=2", "rollout.episodes_per_worker=4", "rollout.group_size=2",
                             *[f"{k}={v}" for k, v in over.items()]])
    for section in ("prompt_gen", "image_gen", "quality_eval", "knowledge", "mask_gen"):
        getattr(cfg.tools, section).resources.num_cpus = 0.05
    return cfg
