"""The demo's report folder: ``report.md`` and ``samples.png`` (delivered samples, masks outlined)."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict

import numpy as np

from cluster.stages import StageRunner


def outlined(image: np.ndarray, mask: np.ndarray, colour=(0, 255, 0)) -> np.ndarray:
    """``image`` with the border of ``mask`` drawn on it (1 px)."""
    import cv2

    m = (np.asarray(mask) > 0).astype(np.uint8)
    edge = m - cv2.erode(m, np.ones((3, 3), np.uint8))
    out = np.asarray(image).copy()
    out[edge > 0] = colour
    return out


def samples_figure(generated: Path, out: Path, per_type: int = 2, max_types: int = 6, name: str = "samples.png") -> Path:
    """Delivered samples only (what the gate passed): per defect type, the normal and up to
    ``per_type`` generated images with their mask outlined in green."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from PIL import Image

    from rollout.data.images import read_rgb

    metas = [json.loads(p.read_text()) for p in sorted((generated / "samples").glob("*.json"))
             if not p.name.endswith(".undelivered.json")]
    by_type: Dict[tuple, list] = {}
    for m in metas:
        by_type.setdefault((m["category"], m["defect_type"]), []).append(m)
    keys = sorted(by_type)[:max_types]
    cols = 1 + per_type
    fig, axes = plt.subplots(max(1, len(keys)), cols, figsize=(2.0 * cols, 2.1 * max(1, len(keys))), squeeze=False)
    for r, key in enumerate(keys):
        ms = by_type[key][:per_type]
        axes[r, 0].imshow(read_rgb(ms[0]["normal"]))
        axes[r, 0].set_title(f"{key[0]}\nnormal", fontsize=7)
        for c in range(per_type):
            ax = axes[r, 1 + c]
            if c < len(ms):
                m = ms[c]
                img = np.asarray(Image.open(generated / m["image"]).convert("RGB"))
                ax.imshow(outlined(img, np.asarray(Image.open(generated / m["mask"]))))
                ax.set_title(f"{key[1]} ({m['source']})\nQE {m['qe'].get('location_score', 0):.1f}/"
                             f"{m['qe'].get('quality_score', 0):.1f}", fontsize=7)
        for ax in axes[r]:
            ax.axis("off")
    if not keys:
        axes[0, 0].text(0.5, 0.5, "no sample passed the gate", ha="center", va="center")
        for ax in axes[0]:
            ax.axis("off")
    fig.tight_layout()
    path = out / name
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _get(runner: StageRunner, name: str) -> Dict[str, Any]:
    return runner.done.get(name, {}).get("result", {})


def write_report(out: Path, runner: StageRunner) -> Path:
    wf, grpo, ablation = (_get(runner, n) for n in ("well_formed", "grpo", "ablation"))
    lines = ["# AnomalyAgent demo report", "",
             "**Tiny models on synthetic data.** This shows that the whole pipeline runs end to end on a CPU box "
             "(data → tiny models → SFT → GRPO → synthesize with a delivery gate → the ablation and benchmarks). It is not the paper's setting: the "
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
    if ablation:
        rows = ablation["rows"]
        agent = rows["grpo"]
        lines += ["## The agent against the fixed pipelines (quick ablation)", "",
                  "All five rows ran in one go on the same normals, through the same tools and the same delivery gate "
                  "(`rollout/finalize.py`): a sample is written only if it visibly changed the image, its mask is not "
                  "empty and covers the change, and the judge passes it as the requested type. "
                  f"The trained agent delivered {agent['delivered']} of {agent['samples']} samples "
                  f"(first-attempt yield {agent['first_attempt_yield']:.3f}, type fidelity {agent['type_fidelity']:.3f}, "
                  f"{agent['undelivered']} undelivered, {agent['empty_delivered']} empty masks delivered).", ""]
        table = out / "ablation" / "table.md"
        lines += table.read_text().splitlines()[1:] if table.is_file() else []
        lines += ["", "![ablation](ablation.png)", "",
                  "Delivered samples of the trained agent (mask outlined in green; the title gives the source and the "
                  "judge's location/quality scores on delivery): ![samples](samples.png)", "",
                  "Tiny models, synthetic data, random-init feature networks where no weights are on disk: the MVTec "
                  "columns compare the rows with each other, not with the published numbers.", ""]
    lines += ["## Artefacts", "", "- trajectories (Parquet + PNG): `grpo/trajectories/`, `ablation/rows/<row>/trajectories/`, "
              "`trajectories/`", "- delivered samples per row: `ablation/rows/<row>/<category>/<defect>/{image,mask}/`; "
              "every attempt's gate verdict: `ablation/rows/<row>/samples/`", "- TensorBoard: `sft/tensorboard/`, `grpo/tensorboard/` "
              "(`tensorboard --logdir " + str(out) + "`)", "- stage results: `stages.json`", "",
              "## Look at them", "",
              f"- every episode, turn by turn: `anomalyagent view --runs {out}` (http://127.0.0.1:8080)",
              f"- a blind rating by people (each rater opens the page with a rater id of their own): `anomalyagent rate "
              f"--samples {out}/ablation/rows/grpo --mix real,baseline --baseline {out}/ablation/rows/fixed "
              f"--out {out}/ratings.db` (http://127.0.0.1:8081); the page gives the good-sample rate per source "
              "with Wilson 95 % intervals", ""]
    path = out / "report.md"
    path.write_text("\n".join(lines))
    return path
