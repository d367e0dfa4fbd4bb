"""The demo's report folder: ``report.md`` and ``samples.png`` (normal / generated / mask)."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict

from cluster.stages import StageRunner


def samples_figure(generated: Path, out: Path, max_cells: int = 8) -> Path:
    """Normal, generated and mask, one column per defect type (the first sample of each)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from PIL import Image

    metas = [json.loads(p.read_text()) for p in sorted((generated / "samples").glob("*.json"))]
    seen, cells = set(), []
    for m in metas:
        key = tuple(m["image"].split("/")[:2])  # (category, defect)
        if key not in seen:
            seen.add(key)
            cells.append(m)
    cells = cells[:max_cells]
    fig, axes = plt.subplots(3, max(1, len(cells)), figsize=(2.1 * max(1, len(cells)), 6.6), squeeze=False)
    for k, m in enumerate(cells):
        cat, defect = m["image"].split("/")[:2]
        for row, (img, title) in enumerate([(Image.open(m["normal"]).convert("RGB"), "normal"),
                                            (Image.open(generated / m["image"]).convert("RGB"), "generated"),
                                            (Image.open(generated / m["mask"]).convert("L"), "mask")]):
            axes[row, k].imshow(img, cmap="gray" if title == "mask" else None)
            axes[row, k].axis("off")
            if row == 0:
                axes[row, k].set_title(f"{cat}\n{defect}\n({m['source']})", fontsize=7)
    fig.tight_layout()
    path = out / "samples.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _get(runner: StageRunner, name: str) -> Dict[str, Any]:
    return runner.done.get(name, {}).get("result", {})


def write_report(out: Path, runner: StageRunner) -> Path:
    wf, grpo, syn, bench = (_get(runner, n) for n in ("well_formed", "grpo", "synthesize", "bench"))
    lines = ["# AnomalyAgent demo report", "",
             "**Tiny models on synthetic data.** This shows that the whole pipeline runs end to end on a CPU box "
             "(data → tiny models → SFT → GRPO → synthesize → benchmarks). It is not the paper's setting: the "
             "numbers below say nothing about how the method does with real models on MVTec AD.", "",
             "## Stages", "", "| stage | seconds |", "|---|---|"]
    lines += [f"| {name} | {rec['seconds']:.1f} |" for name, rec in runner.done.items()]
    lines += [f"| **total** | {sum(r['seconds'] for r in runner.done.values()):.1f} |", ""]
    if wf:
        decoding = "greedy" if not wf.get("temperature") else f"temperature {wf['temperature']:g}"
        sampled = ("" if wf.get("after_sampled") is None else
                   f" Sampled at temperature {wf['sampled_temperature']:g}, after SFT: {wf['after_sampled']:.3f}.")
        lines += ["## SFT (stage 1)", "",
                  f"Well-formed episodes on {wf['tasks']} fresh target tasks ({decoding}): before SFT {wf['before']:.3f}, "
                  f"after SFT {wf['after']:.3f}.{sampled}", ""]
    if grpo:
        lines += ["## GRPO (stage 2)", "",
                  f"{grpo['steps']} steps; mean reward of the first 5 steps {grpo['reward_first5']:.4f}, of the last 5 "
                  f"{grpo['reward_last5']:.4f}. ![reward curve](reward_curve.png)", ""]
    if syn:
        lines += ["## Synthesis", "", f"{syn['samples']} samples for the target categories in `{syn['out']}`; "
                  f"by source: {syn['all_sources']} (`agent`: the agent's answer and mask; the others are the "
                  "labelled fallbacks of `rollout/finalize.py`). ![samples](samples.png)", ""]
    if bench:
        table = Path(bench["out"]) / "table.md"
        lines += ["## Benchmarks (quick preset)", "",
                  "Tiny models, synthetic data, random-init feature networks where no weights are on disk: "
                  "the published row is shown for the layout only, not for comparison.", ""]
        lines += table.read_text().splitlines()[1:] if table.is_file() else []
        lines += ["", "![per category](per_category.png)", ""]
    lines += ["## Artefacts", "", "- trajectories (Parquet + PNG): `grpo/trajectories/`, `synthesized/trajectories/`, "
              "`trajectories/`", "- TensorBoard: `sft/tensorboard/`, `grpo/tensorboard/` "
              "(`tensorboard --logdir " + str(out) + "`)", "- stage results: `stages.json`", ""]
    path = out / "report.md"
    path.write_text("\n".join(lines))
    return path
