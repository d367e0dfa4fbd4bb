"""A task is one normal image, a category and a defect type to synthesize on it."""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import List, Optional, Sequence, Tuple

import numpy as np
from PIL import Image

from actors.knowledge_base import load_knowledge_base


@dataclass(frozen=True)
class Task:
    task_id: str
    category: str
    defect_type: str
    image_path: str
    seed: int = 0
    region: Optional[Tuple[float, float, float, float]] = None  # where IG must edit (a user's mask), normalized

    def load_image(self) -> np.ndarray:
        with Image.open(self.image_path) as im:
            return np.asarray(im.convert("RGB"))

    def to_dict(self) -> dict:
        return asdict(self)


def make_tasks(dataset, categories: Sequence[str], per_defect: int = 1, seed: int = 0) -> List[Task]:
    """Tasks over ``train/good`` normals: every defect type of every category the knowledge
    base holds, cycling through the normal images."""
    kb = load_knowledge_base()
    tasks: List[Task] = []
    for cat in categories:
        normals = dataset.train(cat)
        if not normals:
            raise ValueError(f"category {cat!r} has no normal training images")
        for d in kb.defects(cat):
            for i in range(per_defect):
                img = normals[(len(tasks) + i) % len(normals)]
                tasks.append(Task(f"{cat}-{d}-{i}", cat, d, str(img.image), seed * 100003 + len(tasks)))
    return tasks
