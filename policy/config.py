"""Configuration of the policy model (tiny by default, real checkpoints by path or hub id)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional


@dataclass
class TinyModelConfig:
    """Sizes of the tiny models built offline for tests and the CPU default."""

    vocab_size: int = 2048  # BPE vocabulary trained locally (plus special tokens)
    hidden_size: int = 64
    intermediate_size: int = 128
    num_layers: int = 2
    num_heads: int = 4
    num_kv_heads: int = 2
    max_positions: int = 4096
    vision_hidden_size: int = 32
    vision_depth: int = 1
    seed: int = 0


@dataclass
class PolicyConfig:
    """``path`` empty means: build (once) and use the tiny text model in the cache folder."""

    path: Optional[str] = None
    kind: str = "text"  # text | vl
    dtype: str = "float32"
    tiny: TinyModelConfig = field(default_factory=TinyModelConfig)
