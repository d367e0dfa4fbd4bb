"""Configuration of the five tools and the Ray actors that host them."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import List, Optional


@dataclass
class ActorResources:
    """How a tool is placed on the cluster and how it batches.

    Fractional CPUs keep a 2-core machine from starving (see stack notes); on a GPU
    cluster ``num_gpus`` is the fraction of one GPU each replica holds.
    """

    num_cpus: float = 0.25
    num_gpus: float = 0.0
    replicas: int = 1
    max_restarts: int = 2
    timeout_s: float = 60.0
    max_batch_size: int = 8
    batch_wait_ms: float = 5.0
    max_concurrency: int = 64


@dataclass
class ImageGenConfig:
    backend: str = "procedural"  # procedural | diffusers
    model: Optional[str] = None  # local path or hub id of an inpainting pipeline
    steps: int = 20
    guidance_scale: float = 7.5
    strength: float = 1.0
    resolution: int = 512  # diffusion runs at this size; results are resized back
    dtype: str = "float16"
    resources: ActorResources = field(default_factory=ActorResources)


@dataclass
class MaskGenConfig:
    backend: str = "classical"  # classical | sam
    checkpoint: Optional[str] = None  # segment-anything checkpoint file
    model_type: str = "vit_b"
    change_threshold: float = 0.06  # fraction of the dynamic range counted as a change (the judge's level)
    resources: ActorResources = field(default_factory=ActorResources)


@dataclass
class QualityEvalConfig:
    backend: str = "metric"  # metric | vlm
    model: Optional[str] = None  # VLM judge, local path or hub id
    max_new_tokens: int = 96
    pass_score: float = 3.5  # a generation passes when location and quality both reach it
    resources: ActorResources = field(default_factory=ActorResources)


@dataclass
class KnowledgeConfig:
    """``extra``: the user's knowledge files (YAML/JSON, actors/knowledge_files.py), merged
    over the shipped base in order. ``on_unknown``: what a requested (category, defect type)
    without an entry does before any work: ``error`` (exit 2) or ``derive`` (an entry from
    the defect name and, where allowed, the dataset's real anomalies of that type).
    ``derive_from_target``: may a target category's real anomalies be measured? No in the
    published zero-shot setting."""

    embedder: str = "minilm"  # minilm (ships its weights) | hashing (no weights at all)
    top_k: int = 3
    extra: List[str] = field(default_factory=list)
    on_unknown: str = "derive"  # derive | error
    derive_from_target: bool = False
    resources: ActorResources = field(default_factory=ActorResources)


@dataclass
class PromptGenConfig:
    backend: str = "template"  # template | llm
    model: Optional[str] = None
    max_new_tokens: int = 64
    resources: ActorResources = field(default_factory=ActorResources)


@dataclass
class ToolsConfig:
    image_gen: ImageGenConfig = field(default_factory=ImageGenConfig)
    mask_gen: MaskGenConfig = field(default_factory=MaskGenConfig)
    quality_eval: QualityEvalConfig = field(default_factory=QualityEvalConfig)
    knowledge: KnowledgeConfig = field(default_factory=KnowledgeConfig)
    prompt_gen: PromptGenConfig = field(default_factory=PromptGenConfig)
