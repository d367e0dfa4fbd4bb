"""What the episode viewer reads from a runs folder, as it is: every trajectory store under
it (``synthesize``, ``train``, the demo, ``bench agent``'s rows), their Parquet episodes,
GRPO's per-step rewards, and ``synthesize``'s sample files. Nothing here writes.

The policy's own text (its thinking) is stored as token ids; it is decoded with the
tokenizer of the policy that wrote it when one is found (``summary.json``'s policy, or the
run's latest checkpoint), otherwise only the tool calls are shown.
"""
from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path
from typing import Any, Dict, List, Optional

from rollout.store import TrajectoryStore

LIST_COLUMNS = ["episode_id", "task_id", "group", "category", "defect_type", "status", "turns", "actions", "knowledge"]


class ViewerError(ValueError):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status, self.message = status, message


def find_stores(runs: Path) -> Dict[str, Path]:
    """{name relative to ``runs``: folder} of every trajectory store (a folder with episodes/*.parquet)."""
    runs = Path(runs)
    if not runs.is_dir():
        raise ViewerError(404, f"runs folder not found: {runs}")
    found = {}
    for episodes in sorted(runs.rglob("episodes")):
        if episodes.is_dir() and any(episodes.glob("*.parquet")):
            store = episodes.parent
            found[str(store.relative_to(runs)) or "."] = store
    return found


def _samples_by_episode(store: Path) -> Dict[str, Dict[str, Any]]:
    """synthesize's verdicts: episode id -> {source, delivered, policy}."""
    base = store.parent
    out: Dict[str, Dict[str, Any]] = {}
    summary = base / "summary.json"
    policy = json.loads(summary.read_text()).get("policy", "") if summary.is_file() else ""
    folder = base / "samples"
    for p in sorted(folder.glob("*.json")) if folder.is_dir() else ():
        meta = json.loads(p.read_text())
        for a in meta.get("attempts", []):
            out[a["episode_id"]] = {"source": a.get("source") or "", "delivered": bool(a.get("passed")), "policy": policy}
    return out


def _step_of(episode_id: str) -> Optional[int]:
    head = episode_id.split("-", 1)[0]
    return int(head[1:]) if head[:1] == "s" and head[1:].isdigit() else None


class RunsView:
    def __init__(self, runs: str | Path):
        self.runs = Path(runs).resolve()
        self.stores = find_stores(self.runs)
        if not self.stores:
            raise ViewerError(404, f"no trajectories under {self.runs}: expected <run>/trajectories/episodes/*.parquet "
                                   "(from synthesize, train, bench agent or the demo)")

    def store(self, name: str) -> Path:
        if name not in self.stores:
            raise ViewerError(404, f"unknown store {name!r}; known: {', '.join(self.stores)}")
        return self.stores[name]

    def summary(self) -> List[Dict[str, Any]]:
        return [{"store": n, "episodes": len(list((p / "episodes").glob("*.parquet")))} for n, p in self.stores.items()]

    def _rewards(self, name: str) -> Dict[str, Dict[str, Any]]:
        df = TrajectoryStore(self.store(name)).read_rewards()
        return {r["episode_id"]: r for r in df.to_dict("records")}

    def episodes(self, name: str, category: Optional[str] = None, defect_type: Optional[str] = None,
                 source: Optional[str] = None, status: Optional[str] = None, reward_min: Optional[float] = None,
                 reward_max: Optional[float] = None, checkpoint: Optional[str] = None) -> List[Dict[str, Any]]:
        store = self.store(name)
        df = TrajectoryStore(store).read(LIST_COLUMNS)
        rewards, samples = self._rewards(name), _samples_by_episode(store)
        rows = []
        for r in df.to_dict("records"):
            eid = r["episode_id"]
            rw, sm = rewards.get(eid, {}), samples.get(eid, {})
            step = rw.get("policy_version", _step_of(eid))
            ckpt = f"step_{step}" if step is not None and rw else sm.get("policy", "")
            row = {"episode_id": eid, "group": r["group"], "category": r["category"], "defect_type": r["defect_type"],
                   "status": r["status"], "turns": int(r["turns"]), "actions": list(r["actions"]),
                   "knowledge": r.get("knowledge") or "shipped", "source": sm.get("source", ""),
                   "delivered": sm.get("delivered"), "reward": rw.get("total"), "advantage": rw.get("advantage"),
                   "checkpoint": ckpt}
            if category and row["category"] != category or defect_type and row["defect_type"] != defect_type:
                continue
            if source and row["source"] != source or status and row["status"] != status:
                continue
            if checkpoint and row["checkpoint"] != checkpoint:
                continue
            if (reward_min is not None or reward_max is not None) and row["reward"] is None:
                continue
            if reward_min is not None and row["reward"] < reward_min or reward_max is not None and row["reward"] > reward_max:
                continue
            rows.append(row)
        return rows

    def file(self, name: str, relative: str) -> Path:
        """A file of the store (images, masks), refusing any path that leaves it."""
        root = self.store(name).resolve()
        path = (root / relative).resolve()
        if root not in path.parents or not path.is_file():
            raise ViewerError(404, f"no file {relative!r} in store {name!r}")
        return path

    def episode(self, name: str, episode_id: str) -> Dict[str, Any]:
        store = TrajectoryStore(self.store(name))
        try:
            path = store.path_of(episode_id)
        except ValueError as e:
            raise ViewerError(400, str(e)) from None
        if not path.exists():
            raise ViewerError(404, f"no episode {episode_id!r} in store {name!r}")
        import pyarrow.parquet as pq

        r = pq.read_table(path).to_pylist()[0]
        tool_log = json.loads(r["tool_log"])
        texts = policy_turns(r, tokenizer_for(self.store(name)))
        turns = []
        for i, call in enumerate(tool_log):
            text = texts[call["turn"] - 1] if texts and call["turn"] - 1 < len(texts) else None
            turns.append({**call, "text": text})
        meta = json.loads(r["image_meta"])
        masks = json.loads(r["mask_paths"])
        images = [{"index": k, "path": p, "mask": masks.get(str(k)), **{x: meta[k].get(x) for x in ("prompt", "qe", "source")}}
                  for k, p in enumerate(r["image_paths"])] if meta else []
        answer_text = texts[-1] if texts and len(texts) > len(tool_log) else None
        return {"episode_id": episode_id, "store": name, "category": r["category"], "defect_type": r["defect_type"],
                "status": r["status"], "group": r["group"], "knowledge": r.get("knowledge") or "shipped",
                "turns": turns, "answer": json.loads(r["answer"]), "answer_text": answer_text, "images": images,
                "qe_scores": json.loads(r["qe_scores"]), "reward": self._rewards(name).get(episode_id),
                "decoded": texts is not None}

    def group(self, name: str, group: str) -> List[Dict[str, Any]]:
        """The G episodes of one GRPO group, with their final image and advantage."""
        rows = [r for r in self.episodes(name) if r["group"] == group]
        if not rows:
            raise ViewerError(404, f"no group {group!r} in store {name!r}")
        out = []
        for r in rows:
            e = self.episode(name, r["episode_id"])
            final = e["answer"].get("final_image_index") if isinstance(e["answer"], dict) else None
            img = next((i for i in e["images"] if i["index"] == final), e["images"][-1] if e["images"] else None)
            out.append({**r, "final_image": img, "turn_names": [t["name"] for t in e["turns"]]})
        return out


def tokenizer_for(store: Path):
    """The tokenizer of the policy that wrote the store, when one can be found; else None."""
    candidates = []
    summary = store.parent / "summary.json"
    if summary.is_file():
        candidates.append(json.loads(summary.read_text()).get("policy"))
    latest = store.parent / "checkpoints" / "latest"
    if latest.is_file():
        candidates.append(str(store.parent / "checkpoints" / latest.read_text().strip() / "model"))
    for c in candidates:
        if c and (Path(c) / "tokenizer.json").is_file():
            return _load_tokenizer(str(c))
    return None


@lru_cache(maxsize=4)
def _load_tokenizer(path: str):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(path)


def policy_turns(row: Dict[str, Any], tokenizer) -> Optional[List[str]]:
    """The policy's turns as text: the runs of response tokens the policy wrote (mask 1)."""
    if tokenizer is None:
        return None
    ids, mask = row["response_ids"], row["response_mask"]
    turns, cur = [], []
    for t, m in zip(ids, mask):
        if m:
            cur.append(t)
        elif cur:
            turns.append(cur)
            cur = []
    if cur:
        turns.append(cur)
    return [tokenizer.decode(t, skip_special_tokens=False) for t in turns]
