"""Configuration of the policy model (tiny by default, real checkpoints by path or hub id)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional


@dataclass
class TinyModelConfig:
    """Sizes of the tiny models built offline for tests and the CPU default."""

    vocab_size: int = 4096  # BPE vocabulary trained locally (plus special tokens)
    hidden_size: int = 96
    intermediate_size: int = 256
    num_layers: int = 3
    num_heads: int = 4
    num_kv_heads: int = 2
    max_positions: int = 4096
    vision_hidden_size: int = 32
    vision_depth: int = 1
    seed: int = 0


@dataclass
class EngineConfig:
    """The HF generation engine (CPU and small GPUs); verl's vLLM/SGLang servers on clusters."""

    replicas: int = 1
    num_cpus: float = 2.0  # Ray gives an actor as many intra-op threads as whole CPUs
    num_gpus: float = 0.0
    max_batch_size: int = 32  # rows decoded together (continuous: KV slots)
    batch_wait_ms: float = 10.0
    continuous_batching: bool = True  # text policies: requests join and leave the batch between decode steps
    max_restarts: int = 2
    # earlier turns' keys/values kept for reuse (policy/prefix_cache.py); 0 = off. Memory per
    # token: layers x 2 x kv_heads x head_dim x dtype bytes (tiny: 1.1 KB; a 7B Qwen2.5 in bf16: 57 KB)
    prefix_cache_tokens: int = 262144  # tiny policy: ~290 MB; must hold every live episode


@dataclass
class PolicyConfig:
    """``path`` empty means: build (once) and use the tiny text model in the cache folder."""

    path: Optional[str] = None
    kind: str = "text"  # text | vl
    dtype: str = "float32"
    tiny: TinyModelConfig = field(default_factory=TinyModelConfig)
    engine: EngineConfig = field(default_factory=EngineConfig)


@dataclass
class SFTConfig:
    """Stage 1. ``steps`` optimizer steps over the trajectory set, ``batch_size`` trajectories each."""

    variants_per_anomaly: int = 16  # trajectories built per real anomaly image (different N)
    word_swap_fraction: float = 0.5  # share of trajectories whose content words become random words (policy/word_swap.py)
    steps: int = 2000  # ~28 min on the 2-core box; the demo runs demo.sft_steps
    batch_size: int = 8
    lr: float = 3.0e-3
    min_lr_ratio: float = 0.1
    warmup_steps: int = 20
    weight_decay: float = 0.01
    grad_clip: float = 1.0
    save_every: int = 100
    keep_last: int = 2
    log_every: int = 10
    resume: str = "auto"  # auto | disable | a checkpoint path
    freeze_vision: bool = True  # a VL policy's vision tower stays frozen (as published)
    eval_tasks: int = 64  # fresh target tasks for the well-formed rate
    eval_temperature: float = 0.0  # the headline rate: greedy, as verl validates (val_kwargs.do_sample=False)
    eval_sampled_temperature: float = 1.0  # also reported after SFT: the RL rollout temperature (0 skips it)


@dataclass
class LearnerConfig:
    """Stage 2 (GRPO; PPO-clip surrogate with KL to a frozen reference), on verl's core_algos."""

    lr: float = 1.0e-4
    adam_eps: float = 1.0e-8
    clip_ratio: float = 0.2
    kl_coef: float = 0.01
    kl_type: str = "low_var_kl"
    loss_agg_mode: str = "token-mean"
    grad_clip: float = 1.0
    filter_zero_advantage: bool = True  # drop groups whose rewards are all equal (no signal; GRPO only)
    estimator: str = "grpo"  # grpo | gae (PPO with a value head on the policy's trunk)
    gamma: float = 1.0  # GAE discount (policy tokens only; observation tokens are skipped)
    lam: float = 0.95  # GAE lambda
    value_coef: float = 0.5  # weight of the value loss
    value_clip: float = 0.2  # PPO value clipping range
    world_size: int = 1  # learner processes (gloo on CPU, NCCL on GPU)
    sharding: str = "replicated"  # replicated | fsdp (torch FSDP2 over the ranks: parameters, gradients, AdamW state sharded; one rank = one full copy)
    param_dtype: str = "bfloat16"  # FSDP compute dtype on GPUs (gradients reduced in float32); CPU stays float32
    num_cpus_per_worker: float = 1.0
    num_gpus_per_worker: float = 0.0
    placement_strategy: str = "PACK"  # placement group of the learner ranks: PACK | SPREAD | STRICT_PACK | STRICT_SPREAD


@dataclass
class RLConfig:
    """The RL loop: ``tasks_per_step`` source tasks × ``rollout.group_size`` episodes per step."""

    steps: int = 20
    tasks_per_step: int = 8
    save_every: int = 5
    keep_last: int = 2
    resume: str = "auto"  # auto | disable | a checkpoint path
    max_restarts: int = 2  # `anomalyagent train` resumes in-process when a learner process dies
