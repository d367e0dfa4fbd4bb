"""``anomalyagent sft``: build trajectories from the source categories, train, and measure the
well-formed episode rate of the policy before and after on fresh target tasks, through the
real rollout manager."""
from __future__ import annotations

import math
from pathlib import Path
from typing import Dict, Optional

from cluster.config import AppConfig


def build_sft_data(cfg: AppConfig, root: str, policy: str, out: Path) -> Dict:
    from transformers import AutoTokenizer

    from actors.registry import build_tool
    from policy.sft_data import GoodImageNormals, SyntheticNormals, TrajectoryBuilder, write_sft_dataset
    from rollout.data import open_dataset
    from rollout.format import TOOL_NAMES

    ds = open_dataset(cfg.data.format, root, cfg.data.source_categories, cfg.data.visa_type_table)
    normals = SyntheticNormals(root) if (Path(root) / "dataset.json").is_file() else GoodImageNormals(ds)
    builder = TrajectoryBuilder({n: build_tool(n, cfg.tools) for n in TOOL_NAMES}, normals, cfg.seed)
    trajs = [t for cat in ds.categories for s in ds.anomalies(cat) for v in range(cfg.sft.variants_per_anomaly)
             if (t := builder.build(s, v)) is not None]
    longest = max((len(t.turns) for t in trajs), default=0)
    if longest > cfg.episode.max_turns:  # the policy learns episodes it can never finish
        print(f"warning: SFT trajectories have up to {longest} turns but episode.max_turns is "
              f"{cfg.episode.max_turns}: such episodes will stop at the cap (raise episode.max_turns to {longest})")
    tokenizer = AutoTokenizer.from_pretrained(policy)
    if cfg.sft.word_swap_fraction != 0:  # swap_some refuses a fraction outside [0, 1]
        from actors.knowledge_files import load_knowledge
        from policy.word_swap import WordSwap, swap_some, vocabulary_pieces

        swapper = WordSwap(vocabulary_pieces(tokenizer), load_knowledge(tuple(cfg.tools.knowledge.extra)))
        trajs = swap_some(trajs, swapper, cfg.sft.word_swap_fraction, cfg.seed)
    from rollout.vision import VisionRenderer, processor_for

    processor = processor_for(policy)  # a VL policy sees the images its episodes show
    return write_sft_dataset(trajs, tokenizer, out, VisionRenderer(processor) if processor is not None else None)


def well_formed_rate(cfg: AppConfig, root: str, policy: str, store: Optional[Path], prefix: str,
                     temperature: Optional[float] = None) -> float:
    """Share of well-formed episodes on ``sft.eval_tasks`` fresh target tasks, sampled at
    ``temperature`` (default ``sft.eval_temperature``; 0 is greedy)."""
    import copy

    from actors.knowledge_files import load_knowledge
    from cluster.demo_rollout import well_formed
    from cluster.runtime import start_runtime
    from rollout.data import open_dataset
    from rollout.tasks import make_tasks

    cfg = copy.deepcopy(cfg)
    cfg.episode.temperature = cfg.sft.eval_temperature if temperature is None else temperature
    ds = open_dataset(cfg.data.format, root, cfg.data.target_categories)
    n_types = sum(len(ds.defect_types(c)) for c in ds.categories)
    tasks = make_tasks(ds, ds.categories, per_defect=math.ceil(cfg.sft.eval_tasks / max(1, n_types)),
                       seed=cfg.seed + 7, kb=load_knowledge(tuple(cfg.tools.knowledge.extra)))[: cfg.sft.eval_tasks]
    rt = start_runtime(cfg, policy, store)
    try:
        report = rt.manager.run(rt.manager.specs(tasks, group_size=1, prefix=prefix))
    finally:
        rt.shutdown()
    return sum(well_formed(r) for r in report.records) / max(1, len(report.records))


def sampled_rate(cfg: AppConfig, root: str, policy: str) -> Optional[float]:
    """The well-formed rate at ``sft.eval_sampled_temperature`` (None when that is 0)."""
    t = cfg.sft.eval_sampled_temperature
    return well_formed_rate(cfg, root, policy, None, "sampled-", t) if t > 0 else None


def build_and_train(cfg: AppConfig, root: str, base: str, out: Path) -> Dict:
    """Stage 1 into one folder: trajectories in ``out/sft_data`` (built once), checkpoints in
    ``out/checkpoints`` (training resumes per ``sft.resume``)."""
    import json

    from policy.sft import train_sft

    data = out / "sft_data"
    summary = (json.loads((data / "summary.json").read_text()) if (data / "sft.parquet").is_file()
               else build_sft_data(cfg, root, base, data))
    print(f"trajectories: {summary['trajectories']}, N distribution {summary['n_generations']}")
    r = train_sft(base, data / "sft.parquet", out, cfg.sft, cfg.seed)
    return {"checkpoint": str(r.checkpoint), "trajectories": summary["trajectories"],
            "n_generations": summary["n_generations"], "first_loss": round(r.first_loss, 4),
            "last_loss": round(r.last_loss, 4), "train_s": round(r.seconds, 1)}


def run_sft(cfg: AppConfig, out: Path) -> Dict:
    from cluster.assets import dataset_root, policy_path
    from cluster.ray_session import ray_session
    from cluster.stages import StageRunner

    root, base = str(dataset_root(cfg)), policy_path(cfg)
    runner = StageRunner(out)
    trained = runner.run("sft", lambda: build_and_train(cfg, root, base, out))
    with ray_session(cfg.ray):
        before = runner.run("well_formed_before", lambda: {"rate": well_formed_rate(cfg, root, base, None, "before-")})
        after = runner.run("well_formed_after", lambda: {"rate": well_formed_rate(cfg, root, trained["checkpoint"], None, "after-")})
        sampled = runner.run("well_formed_after_sampled", lambda: {
            "temperature": cfg.sft.eval_sampled_temperature, "rate": sampled_rate(cfg, root, trained["checkpoint"])})
    return {"before": before["rate"], "after": after["rate"], "eval_temperature": cfg.sft.eval_temperature,
            "after_sampled": sampled["rate"], "sampled_temperature": sampled["temperature"], **trained}
