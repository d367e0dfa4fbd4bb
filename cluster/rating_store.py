"""The blind rating's state in SQLite (stdlib ``sqlite3``, WAL mode): the sample pool and
every rating, committed one by one, so a killed server loses nothing and a rater resumes
where they stopped. Several raters rate at once: one connection per call, WAL readers never
block the writer, and a rating is keyed (rater, sample), so a duplicate counts once.

The pool: the agent's delivered samples (``synthesize``'s layout), optionally mixed with a
baseline's output (the fixed-prompt row of ``bench agent``) and the dataset's real
anomalies of the same categories and defect types (at most as many per type as the agent
has). Each rater sees them in an order of their own (seeded by the rater id); the page is
given opaque ids only, never the source.
"""
from __future__ import annotations

import hashlib
import random
import re
import sqlite3
import time
from contextlib import closing
from pathlib import Path
from typing import Dict, List, Optional, Sequence

from rollout.data.types import list_images

REASONS = ("wrong type", "not visible", "unrealistic", "off the object", "mask wrong")
VERDICTS = ("good", "bad")
RATER = re.compile(r"^[A-Za-z0-9_.\-]{1,64}$")
SCHEMA = """
CREATE TABLE IF NOT EXISTS samples (id TEXT PRIMARY KEY, image TEXT NOT NULL, mask TEXT NOT NULL,
                                    source TEXT NOT NULL, category TEXT NOT NULL, defect TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS ratings (rater TEXT NOT NULL, sample TEXT NOT NULL REFERENCES samples(id),
                                    verdict TEXT NOT NULL CHECK (verdict IN ('good', 'bad')), reason TEXT,
                                    t REAL NOT NULL, PRIMARY KEY (rater, sample));
"""


class RatingError(ValueError):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status, self.message = status, message


def generated_samples(folder: Path, source: str) -> List[Dict[str, str]]:
    """(image, mask) pairs of a ``synthesize`` output folder."""
    out = []
    for cat_dir in sorted(p for p in folder.iterdir() if p.is_dir()):
        for d in sorted(p for p in cat_dir.iterdir() if (p / "image").is_dir()):
            for img in list_images(d / "image"):
                mask = d / "mask" / f"{img.stem}.png"
                if mask.is_file():
                    out.append({"image": str(img.resolve()), "mask": str(mask.resolve()), "source": source,
                                "category": cat_dir.name, "defect": d.name})
    return out


def real_samples(dataset, wanted: Dict[tuple, int]) -> List[Dict[str, str]]:
    """Up to ``wanted[(category, defect)]`` real anomalies of each type, in file order."""
    out = []
    for (cat, defect), n in sorted(wanted.items()):
        if cat not in dataset.categories:
            continue
        found = [s for s in dataset.anomalies(cat) if s.defect == defect and s.masks][:n]
        out += [{"image": str(Path(s.image).resolve()), "mask": str(Path(s.masks[0]).resolve()), "source": "real",
                 "category": cat, "defect": defect} for s in found]
    return out


def _sample_id(s: Dict[str, str]) -> str:
    return hashlib.sha1(f"{s['source']}|{s['image']}".encode()).hexdigest()[:12]


class RatingStore:
    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with closing(self._connect()) as db:
            db.execute("PRAGMA journal_mode=WAL")
            db.executescript(SCHEMA)

    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, timeout=30, isolation_level=None)
        db.execute("PRAGMA synchronous=FULL")
        db.row_factory = sqlite3.Row
        return db

    def add_samples(self, samples: Sequence[Dict[str, str]]) -> int:
        """Add to the pool (kept across restarts); returns how many were new."""
        with closing(self._connect()) as db:
            before = db.execute("SELECT COUNT(*) FROM samples").fetchone()[0]
            db.executemany("INSERT OR IGNORE INTO samples VALUES (?, ?, ?, ?, ?, ?)",
                           [(_sample_id(s), s["image"], s["mask"], s["source"], s["category"], s["defect"]) for s in samples])
            return db.execute("SELECT COUNT(*) FROM samples").fetchone()[0] - before

    def sample(self, sample_id: str) -> Dict[str, str]:
        with closing(self._connect()) as db:
            row = db.execute("SELECT * FROM samples WHERE id = ?", (sample_id,)).fetchone()
        if row is None:
            raise RatingError(404, f"unknown sample {sample_id!r}")
        return dict(row)

    @staticmethod
    def check_rater(rater: str) -> str:
        if not isinstance(rater, str) or not RATER.match(rater):
            raise RatingError(422, "rater must be 1-64 letters, digits, '_', '-' or '.'")
        return rater

    def next_for(self, rater: str) -> Dict[str, object]:
        """The rater's next unrated sample in their own order, and their progress."""
        self.check_rater(rater)
        with closing(self._connect()) as db:
            ids = [r[0] for r in db.execute("SELECT id FROM samples ORDER BY id")]
            done = {r[0] for r in db.execute("SELECT sample FROM ratings WHERE rater = ?", (rater,))}
        random.Random(rater).shuffle(ids)
        nxt = next((i for i in ids if i not in done), None)
        return {"sample": nxt, "rated": len(done), "total": len(ids)}

    def rate(self, rater: str, sample_id: str, verdict: str, reason: Optional[str] = None) -> None:
        self.check_rater(rater)
        if verdict not in VERDICTS:
            raise RatingError(422, f"verdict must be one of {list(VERDICTS)}, got {verdict!r}")
        if reason not in (None, "") and reason not in REASONS:
            raise RatingError(422, f"reason must be one of {list(REASONS)}, got {reason!r}")
        self.sample(sample_id)  # 404 for an unknown one
        with closing(self._connect()) as db:
            try:
                db.execute("INSERT INTO ratings VALUES (?, ?, ?, ?, ?)", (rater, sample_id, verdict, reason or None, time.time()))
            except sqlite3.IntegrityError:
                raise RatingError(409, f"rater {rater!r} already rated sample {sample_id!r}; counted once") from None

    def ratings(self) -> List[Dict[str, str]]:
        with closing(self._connect()) as db:
            rows = db.execute("SELECT r.rater, r.sample, r.verdict, r.reason, r.t, s.source, s.category, s.defect "
                              "FROM ratings r JOIN samples s ON s.id = r.sample ORDER BY r.t").fetchall()
        return [dict(r) for r in rows]
