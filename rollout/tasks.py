"""A task is one normal image, a category and a defect type to synthesize on it."""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import List, Optional, Sequence, Tuple

import numpy as np

from actors.knowledge_base import load_knowledge_base
from rollout.data.images import read_rgb


@dataclass(frozen=True)
class Task:
    task_id: str
    category: str
    defect_type: str
    image_path: str
    seed: int = 0
    region: Optional[Tuple[float, float, float, float]] = None  # where IG must edit (a user's mask), normalized
    knowledge: str = "shipped"  # how the pair's knowledge entry was obtained: shipped | user | derived | name_only

    def load_image(self) -> np.ndarray:
        return read_rgb(self.image_path)

    def to_dict(self) -> dict:
        return asdict(self)


def make_tasks(dataset, categories: Sequence[str], per_defect: int = 1, seed: int = 0, kb=None) -> List[Task]:
    """Tasks over ``train/good`` normals: every defect type the knowledge base holds for a
    category it knows (the dataset's own test folders for one it does not), cycling
    through the normal images. Each task carries how its pair's knowledge was obtained."""
    kb = kb or load_knowledge_base()
    known = set(kb.categories())
    tasks: List[Task] = []
    for cat in categories:
        normals = dataset.train(cat)
        if not normals:
            raise ValueError(f"category {cat!r} has no normal training images")
        for d in kb.defects(cat) if cat in known else dataset.defect_types(cat):
            for i in range(per_defect):
                img = normals[(len(tasks) + i) % len(normals)]
                tasks.append(Task(f"{cat}-{d}-{i}", cat, d, str(img.image), seed * 100003 + len(tasks),
                                  knowledge=kb.source_of(cat, d)))
    return tasks
