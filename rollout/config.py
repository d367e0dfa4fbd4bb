"""Configuration of datasets, episodes and rollouts, and ``load_sections``: the slice of a
preset that code below ``cluster/`` needs (verl's agent-loop workers read the tools and
the episode from it, without the face's whole configuration)."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

DEFAULT_PRESET = Path(__file__).resolve().parent.parent / "configs" / "cpu.yaml"


def load_sections(path, overrides: Sequence[str], sections: Dict[str, type]) -> Dict[str, Any]:
    """``{name: dataclass}`` of the named top-level sections of a preset file with its
    ``key=value`` overrides, each checked against its schema (an unknown key is an error
    naming it). The other sections are left to their owners (``cluster.config``)."""
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    p = Path(path)
    if not p.is_file():
        raise ValueError(f"config file not found: {p}")
    raw = OmegaConf.merge(OmegaConf.load(p), OmegaConf.from_dotlist(list(overrides)))
    out = {}
    for name, cls in sections.items():
        schema = OmegaConf.structured(cls)
        OmegaConf.set_struct(schema, True)
        try:
            out[name] = OmegaConf.to_object(OmegaConf.merge(schema, raw.get(name) or {}))
        except OmegaConfBaseException as e:
            key = getattr(e, "full_key", None) or getattr(e, "key", None)
            raise ValueError(f"{p}: bad config key '{name}.{key}': {getattr(e, 'msg', e)}") from None
    return out


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
    grammar_copy: str = "prefix"  # image_gen prompts: "prefix" (a beginning of a PG prompt or KR passage) | "bigram"


@dataclass
class RolloutConfig:
    """How episodes spread over the cluster."""

    num_workers: int = 2  # rollout worker actors (spread over nodes)
    episodes_per_worker: int = 16  # concurrent episodes inside one worker
    group_size: int = 4  # G samples per task
    max_attempts: int = 3  # re-runs of an episode hit by an infrastructure fault
    worker_num_cpus: float = 0.25
    store_dir: str = "trajectories"  # relative to the run's out_dir
