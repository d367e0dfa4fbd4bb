"""Configuration of datasets and (later) episodes and rollouts."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import List, Optional


@dataclass
class SyntheticDataConfig:
    """The generated MVTec-layout dataset used when no real root is configured."""

    size: int = 96  # image side in pixels
    n_train: int = 8  # train/good images per category
    n_test_good: int = 4  # test/good images per category
    n_test_per_defect: int = 6  # anomalies per defect type
    categories: List[str] = field(
        default_factory=lambda: ["syn_weave", "syn_washer", "syn_marble", "syn_pill"]
    )


@dataclass
class DataConfig:
    """Where images come from.

    ``root`` empty means: build the synthetic dataset in the cache folder.
    ``source_categories`` build training trajectories (VisA in a real run);
    ``target_categories`` are evaluation only (MVTec-AD in a real run).
    """

    format: str = "mvtec"  # mvtec | visa | loco
    root: Optional[str] = None
    source_categories: List[str] = field(default_factory=lambda: ["syn_weave", "syn_washer"])
    target_categories: List[str] = field(default_factory=lambda: ["syn_marble", "syn_pill"])
    visa_type_table: Optional[str] = None  # CSV image,defect for VisA per-defect-type split
    synthetic: SyntheticDataConfig = field(default_factory=SyntheticDataConfig)


@dataclass
class EpisodeConfig:
    """Caps and sampling of one multi-turn episode."""

    max_turns: int = 12  # policy turns; the longest SFT trajectory (N=3 generations) has 11
    max_turn_tokens: int = 160  # new tokens per policy turn
    max_response_tokens: int = 2048  # policy + observation tokens after the prompt
    temperature: float = 1.0
    top_p: float = 1.0
    # constrained decoding of every turn (rollout/grammar.py): the format, the tools' argument
    # JSON, valid image indices, and image_gen prompts made of the episode's own words
    grammar: bool = True
    grammar_think_tokens: int = 48  # thinking budget under the grammar; then </thinking> is forced


@dataclass
class RolloutConfig:
    """How episodes spread over the cluster."""

    num_workers: int = 2  # rollout worker actors (spread over nodes)
    episodes_per_worker: int = 16  # concurrent episodes inside one worker
    group_size: int = 4  # G samples per task
    max_attempts: int = 3  # re-runs of an episode hit by an infrastructure fault
    worker_num_cpus: float = 0.25
    store_dir: str = "trajectories"  # relative to the run's out_dir
