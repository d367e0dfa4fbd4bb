"""The agent ablation's table (Markdown) and figure (PNG), from ``cluster.agent_bench``'s report."""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Dict, List


def _f(v, digits: int = 3) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "–"
    return f"{v:.{digits}f}" if isinstance(v, float) else str(v)


COLUMNS = (("first_attempt_yield", "yield (1st attempt)", 3), ("attempts_per_delivered", "attempts / delivered", 2),
           ("ig_calls_per_delivered", "IG calls / delivered", 2), ("type_fidelity", "type fidelity", 3),
           ("empty_or_invisible_before_gate", "empty/invisible before gate", 0), ("delivered", "delivered", 0),
           ("empty_delivered", "empty delivered", 0), ("wall_s_per_delivered", "s / delivered", 2))
MVTEC = (("ic_lpips", "IC-LPIPS (small clusters 0)", 3), ("cls_accuracy", "cls acc %", 1),
         ("pixel_ap", "pixel AP %", 1), ("image_auroc", "image AUROC %", 1))


def markdown(report: Dict[str, Any]) -> str:
    rows, labels = report["rows"], report["labels"]
    head = [c[1] for c in COLUMNS] + [c[1] for c in MVTEC]
    lines = [f"# Agent ablation ({'quick' if report['quick'] else 'full'}: {report['per_defect']} samples per "
             f"defect type of {', '.join(report['categories'])}; best-of-K with K = {report['k']})", "",
             "Every row runs through the same rollout manager, tools and delivery gate on the same normals; "
             "columns are measured on the gated output. MVTec columns: the quick preset against the target "
             "categories' real test anomalies (a type with no delivered sample counts as misclassified).", "",
             "| row | " + " | ".join(head) + " |", "|---" * (len(head) + 1) + "|"]
    for name, label in labels.items():
        r = rows[name]
        m = r.get("mvtec", {})
        cells = [_f(r.get(k), d) for k, _, d in COLUMNS] + [_f(m.get(k), d) for k, _, d in MVTEC]
        if r.get("same_as"):
            label = f"{label} (K = 1: the {labels[r['same_as']]} row, not re-run)"
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    errors = [f"- {labels[n]}: MVTec columns not computed: {r['mvtec']['error']}" for n, r in rows.items()
              if "error" in r.get("mvtec", {})]
    return "\n".join(lines + ([""] + errors if errors else [])) + "\n"


def figure(report: Dict[str, Any], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows, labels = report["rows"], report["labels"]
    names: List[str] = list(labels)
    panels = [("first_attempt_yield", "first-attempt yield", 1.0, False), ("type_fidelity", "type fidelity", 1.0, False),
              ("cls_accuracy", "classification acc (%)", 100.0, True), ("pixel_ap", "pixel AP (%)", 100.0, True)]
    fig, axes = plt.subplots(1, len(panels), figsize=(3.2 * len(panels), 3.2))
    for ax, (key, title, top, mv) in zip(axes, panels):
        vals = [(rows[n].get("mvtec", {}) if mv else rows[n]).get(key) for n in names]
        vals = [0.0 if v is None or (isinstance(v, float) and math.isnan(v)) else v for v in vals]
        ax.bar(range(len(names)), vals, color=["#999999", "#999999", "#999999", "#4c72b0", "#dd8452"])
        ax.set_xticks(range(len(names)), [labels[n] for n in names], rotation=45, ha="right", fontsize=7)
        ax.set_ylim(0, top if not mv else min(top, max(5.0, 1.25 * max(vals))))  # small AP stays readable
        ax.set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def write_tables(report: Dict[str, Any], out: Path) -> Dict[str, Path]:
    out.mkdir(parents=True, exist_ok=True)
    paths = {"table": out / "table.md", "json": out / "ablation.json", "png": out / "ablation.png"}
    paths["table"].write_text(markdown(report))
    paths["json"].write_text(json.dumps(report, indent=1, default=str))
    figure(report, paths["png"])
    return paths
