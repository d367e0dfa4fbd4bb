"""The root configuration: structured dataclasses + YAML + dotlist overrides.

Every section is owned by the package that uses it; this module only composes them and
turns omegaconf's errors into one ``ConfigError`` that names the offending key, raised
before any work starts.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import List, Optional, Sequence

from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from actors.config import ToolsConfig
from benchmarks.config import MVTecBenchConfig
from policy.config import LearnerConfig, PolicyConfig, RLConfig, SFTConfig
from rewards.config import RewardConfig
from rollout.config import DEFAULT_PRESET as DEFAULT_CONFIG
from rollout.config import DataConfig, EpisodeConfig, RolloutConfig

REPO_CONFIGS = DEFAULT_CONFIG.parent


class ConfigError(ValueError):
    """A configuration file or override is wrong; the message names the key."""


@dataclass
class RayConfig:
    """``address`` empty: start an embedded local Ray (or join ``RAY_ADDRESS`` if set).

    ``num_cpus`` is the number of *logical* CPUs declared to a local Ray: more than the
    cores so that fractional actors and 1-CPU tasks never starve each other.
    """

    address: Optional[str] = None
    num_cpus: int = 16
    num_gpus: int = 0
    namespace: str = "anomalyagent"


@dataclass
class DemoConfig:
    """What ``make demo`` runs on top of the sections it shares with the other commands."""

    sft_steps: int = 400  # SFT steps in the demo (``sft.steps`` is for ``anomalyagent sft``/``train``)
    sft_word_swap_fraction: float = 0.0  # 400 steps are too few to learn copying swapped words (README, SFT)
    rl_steps: int = 10  # GRPO steps in the demo (``rl.steps`` is for ``anomalyagent train``)
    rl_tasks_per_step: int = 4  # x rollout.group_size episodes per demo GRPO step (``rl.tasks_per_step``: 8)
    eval_tasks: int = 24  # fresh target tasks for the well-formed rate before/after SFT
    per_defect: int = 3  # synthesized samples per (target category, defect type) in each ablation row (make demo <= 15 min)
    bench_epochs: Optional[int] = None  # classifier/detector epochs of the quick benchmark (None: the preset's)


@dataclass
class SynthesizeConfig:
    """``anomalyagent synthesize``: the trained agent over a dataset's normal images.

    ``policy`` empty: the newest GRPO checkpoint under ``out_dir``, else the newest SFT
    one, else the untrained policy (said in the output).
    """

    policy: Optional[str] = None
    per_defect: int = 8  # samples per (category, defect type); the paper's protocol uses 500
    max_attempts: int = 3  # episodes per sample: one whose sample fails the delivery gate runs again, new seed
    temperature: float = 0.0  # policy sampling temperature for delivery (0: greedy; RL samples at episode.temperature)
    tool_chain_fallback: bool = False  # deliver PG -> IG -> MG (labelled tool_chain) when an episode generated nothing


@dataclass
class ServeConfig:
    """``anomalyagent serve``: the Ray Serve endpoint. ``policy`` empty: as for synthesize."""

    host: str = "127.0.0.1"
    port: int = 8000
    policy: Optional[str] = None
    agent_replicas: int = 1
    agent_num_cpus: float = 0.25
    max_ongoing_requests: int = 32  # per agent replica, running at once
    max_queued_requests: int = 64  # waiting beyond that; more -> 503
    request_timeout_s: float = 300.0
    drain_timeout_s: float = 60.0  # on SIGTERM/SIGINT: how long requests in flight may take to finish
    max_bytes: int = 8_000_000
    max_pixels: int = 4_194_304  # 2048 x 2048
    min_side: int = 16
    max_n: int = 4
    formats: List[str] = field(default_factory=lambda: ["PNG", "JPEG"])
    # who may call (cluster/serve_auth.py): off loopback, or with require_auth, keys are required
    api_keys: List[str] = field(default_factory=list)
    api_key_file: Optional[str] = None  # one key per line
    require_auth: bool = False
    rate_limit_per_minute: float = 60.0  # per key and agent replica
    rate_limit_burst: int = 10


@dataclass
class AppConfig:
    seed: int = 0
    cache_dir: str = "~/.cache/anomalyagent"
    out_dir: str = "runs/default"
    data: DataConfig = field(default_factory=DataConfig)
    policy: PolicyConfig = field(default_factory=PolicyConfig)
    tools: ToolsConfig = field(default_factory=ToolsConfig)
    episode: EpisodeConfig = field(default_factory=EpisodeConfig)
    rollout: RolloutConfig = field(default_factory=RolloutConfig)
    sft: SFTConfig = field(default_factory=SFTConfig)
    reward: RewardConfig = field(default_factory=RewardConfig)
    learner: LearnerConfig = field(default_factory=LearnerConfig)
    rl: RLConfig = field(default_factory=RLConfig)
    demo: DemoConfig = field(default_factory=DemoConfig)
    synthesize: SynthesizeConfig = field(default_factory=SynthesizeConfig)
    serve: ServeConfig = field(default_factory=ServeConfig)
    bench: MVTecBenchConfig = field(default_factory=MVTecBenchConfig)
    ray: RayConfig = field(default_factory=RayConfig)

    @property
    def cache_path(self) -> Path:
        return Path(os.path.expandvars(os.path.expanduser(self.cache_dir)))


def _describe(err: OmegaConfBaseException, source: str) -> str:
    key = getattr(err, "full_key", None) or getattr(err, "key", None)
    msg = getattr(err, "msg", None) or str(err).splitlines()[0]
    if key:
        return f"{source}: bad config key '{key}': {msg}"
    return f"{source}: {msg}"


def load_config(path: Optional[str | os.PathLike] = None, overrides: Sequence[str] = ()) -> AppConfig:
    """Schema ← YAML file ← ``key=value`` overrides, validated, as an ``AppConfig``.

    Unknown keys and values of the wrong type raise ``ConfigError`` naming the key.
    """
    schema = OmegaConf.structured(AppConfig)
    OmegaConf.set_struct(schema, True)
    merged = schema
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"config file not found: {p}")
        try:
            merged = OmegaConf.merge(merged, OmegaConf.load(p))
        except OmegaConfBaseException as e:
            raise ConfigError(_describe(e, str(p))) from None
    bad = [o for o in overrides if "=" not in o]
    if bad:
        raise ConfigError(f"override must look like key=value, got {bad[0]!r}")
    try:
        merged = OmegaConf.merge(merged, OmegaConf.from_dotlist(list(overrides)))
    except OmegaConfBaseException as e:
        raise ConfigError(_describe(e, "override")) from None
    try:
        cfg = OmegaConf.to_object(merged)
    except OmegaConfBaseException as e:
        raise ConfigError(_describe(e, "config")) from None
    _check_choices(cfg)
    _check_ranges(cfg)
    return cfg


_CHOICES = {
    "data.format": ("mvtec", "visa", "loco"),
    "policy.kind": ("text", "vl"),
    "tools.image_gen.backend": ("procedural", "diffusers"),
    "tools.mask_gen.backend": ("classical", "sam"),
    "tools.quality_eval.backend": ("metric", "vlm"),
    "tools.knowledge.embedder": ("minilm", "hashing"),
    "tools.knowledge.on_unknown": ("derive", "error"),
    "episode.grammar_copy": ("prefix", "bigram"),
    "tools.prompt_gen.backend": ("template", "llm"),
    "reward.normalize": ("sum_first", "per_component"),
    "learner.estimator": ("grpo", "gae"),
    "bench.recipe": ("reference", "ours"),
    "learner.placement_strategy": ("PACK", "SPREAD", "STRICT_PACK", "STRICT_SPREAD"),
}


def _check_choices(cfg: AppConfig) -> None:
    for dotted, allowed in _CHOICES.items():
        value = cfg
        for part in dotted.split("."):
            value = getattr(value, part)
        if value not in allowed:
            raise ConfigError(f"bad config key '{dotted}': {value!r} is not one of {list(allowed)}")


# Numeric ranges by key pattern (fnmatch on the dotted key), first match wins: (low, high,
# low exclusive, what it is). Every int/float field must match one (tests/cluster/test_config.py).
_INF = float("inf")
_RANGES = (
    ("sft.warmup_steps", 0, _INF, False, "a count"),
    ("*max_restarts", 0, _INF, False, "a count"),
    ("serve.max_queued_requests", 0, _INF, False, "a count"),
    ("policy.engine.prefix_cache_tokens", 0, _INF, False, "a count (0: no prefix cache)"),
    ("serve.port", 1, 65535, False, "a port"),
    ("*seed", 0, _INF, False, "a seed"),
    ("*temperature", 0, _INF, False, "a temperature"),
    ("*fraction", 0, 1, False, "a fraction"),
    ("*_ratio", 0, 1, False, "a fraction"),
    ("episode.top_p", 0, 1, True, "a fraction"),
    ("learner.lam", 0, 1, False, "a fraction"),
    ("learner.gamma", 0, 1, False, "a fraction"),
    ("tools.image_gen.strength", 0, 1, False, "a fraction"),
    ("tools.mask_gen.change_threshold", 0, 1, False, "a fraction"),
    ("tools.quality_eval.pass_score", 0, 5, False, "a score on 0-5"),
    ("*num_cpus*", 0, _INF, False, "a resource amount"),
    ("*num_gpus*", 0, _INF, False, "a resource amount"),
    ("*lr", 0, _INF, True, "a positive number"),
    ("*timeout_s", 0, _INF, True, "a positive number"),
    ("*adam_eps", 0, _INF, True, "a positive number"),
    ("reward.*", 0, _INF, False, "a non-negative number"),
    ("*coef", 0, _INF, False, "a non-negative number"),
    ("*value_clip", 0, _INF, False, "a non-negative number"),
    ("*weight_decay", 0, _INF, False, "a non-negative number"),
    ("*grad_clip", 0, _INF, False, "a non-negative number"),
    ("*batch_wait_ms", 0, _INF, False, "a non-negative number"),
    ("*guidance_scale", 0, _INF, False, "a non-negative number"),
    # everything else that is numeric is a step count, size or count
    ("*", 1, _INF, False, "a count or size"),
)


def numeric_fields(node, prefix: str = ""):
    """(dotted key, value) of every int/float field, None-valued optionals included."""
    import dataclasses
    import typing

    hints = typing.get_type_hints(type(node))
    for f in dataclasses.fields(node):
        value = getattr(node, f.name)
        if dataclasses.is_dataclass(value):
            yield from numeric_fields(value, f"{prefix}{f.name}.")
            continue
        args = typing.get_args(hints[f.name]) or (hints[f.name],)
        if any(a in (int, float) for a in args):
            yield f"{prefix}{f.name}", value


def range_of(key: str):
    from fnmatch import fnmatchcase

    return next(r for r in _RANGES if fnmatchcase(key, r[0]))


def _check_ranges(cfg: AppConfig) -> None:
    for key, value in numeric_fields(cfg):
        if value is None:
            continue
        _, low, high, open_low, kind = range_of(key)
        if value < low or value > high or (open_low and value == low):
            bound = (f"> {low:g}" if open_low else f">= {low:g}") if high == _INF else \
                f"in {'(' if open_low else '['}{low:g}, {high:g}]"
            raise ConfigError(f"bad config key '{key}': {value!r} is out of range: {kind}, must be {bound}")


def to_yaml(cfg: AppConfig) -> str:
    return OmegaConf.to_yaml(OmegaConf.structured(cfg))
