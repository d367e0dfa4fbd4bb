"""Demo stage: one PG → IG → QE → KR → IG → QE → MG pass per target defect type through
the tool actors on Ray, saved as a picture strip and a score table."""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from cluster.config import AppConfig


def _strip(images, size: int) -> np.ndarray:
    tiles = [np.stack([im] * 3, -1) if im.ndim == 2 else im for im in images]
    return np.concatenate([np.asarray(Image.fromarray(t).resize((size, size), Image.NEAREST)) for t in tiles], 1)


def run_tool_chain(cfg: AppConfig, root: str, out: Path) -> dict:
    import ray

    from actors.knowledge_base import load_knowledge_base
    from actors.ray_actors import start_tools
    from cluster.ray_session import ray_session
    from rollout.data import open_dataset
    from rollout.data.images import read_rgb

    out.mkdir(parents=True, exist_ok=True)
    ds = open_dataset(cfg.data.format, root, cfg.data.target_categories)
    kb = load_knowledge_base()
    rows, strips = [], []
    with ray_session(cfg.ray):
        pools = start_tools(cfg.tools)
        for cat in ds.categories:
            normal = read_rgb(ds.train(cat)[0].image)
            for defect in kb.defects(cat):
                ctx = {"category": cat, "defect_type": defect}
                prompt = pools["prompt_gen"].call_sync({}, None, ctx)["result"]["prompt"]
                first = pools["image_gen"].call_sync({"prompt": prompt.split(" (")[0].split(",")[0], "seed": 1},
                                                     {"image": normal}, ctx)["result"]
                s1 = pools["quality_eval"].call_sync({}, {"normal": normal, "edited": first["image"]},
                                                     {**ctx, "region_px": first["region_px"]})["result"]
                knowledge = pools["knowledge"].call_sync({}, None, ctx)["result"]["text"]
                second = pools["image_gen"].call_sync({"prompt": prompt, "seed": 1, "region": first["region"]},
                                                      {"image": normal}, ctx)["result"]
                s2 = pools["quality_eval"].call_sync({}, {"normal": normal, "edited": second["image"]},
                                                     {**ctx, "region_px": second["region_px"]})["result"]
                mask = pools["mask_gen"].call_sync({}, {"normal": normal, "edited": second["image"]},
                                                   {"region_px": second["region_px"]})["result"]["mask"]
                rows.append({"category": cat, "defect": defect, "first_quality": s1["quality_score"],
                             "refined_quality": s2["quality_score"], "location": s2["location_score"],
                             "review": s1["review"], "knowledge": knowledge[:80]})
                strips.append(_strip([normal, first["image"], second["image"], mask], 96))
        stats = {name: pool.stats()[0] for name, pool in pools.items()}
        for pool in pools.values():
            for a in pool.actors:
                ray.kill(a, no_restart=True)
    Image.fromarray(np.concatenate(strips, 0)).save(out / "tool_chain.png")
    return {"rows": rows, "calls": {n: s["calls"] for n, s in stats.items()},
            "picture": str(out / "tool_chain.png")}
