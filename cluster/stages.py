"""Resumable pipeline stages: a stage that finished is recorded (atomically) with its result
and timing in ``stages.json`` and is skipped on the next run."""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Callable, Dict

from rollout.atomic import write_json_atomic


class StageRunner:
    def __init__(self, out_dir: Path, log: Callable[[str], None] = print):
        self.out_dir = Path(out_dir)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.path = self.out_dir / "stages.json"
        self.done: Dict[str, Dict[str, Any]] = json.loads(self.path.read_text()) if self.path.is_file() else {}
        self.log = log

    def run(self, name: str, fn: Callable[[], Dict[str, Any]]) -> Dict[str, Any]:
        if name in self.done:
            self.log(f"[{name}] done earlier ({self.done[name]['seconds']:.1f}s), skipped")
            return self.done[name]["result"]
        self.log(f"[{name}] running")
        t0 = time.perf_counter()
        result = fn()
        seconds = time.perf_counter() - t0
        self.done[name] = {"seconds": seconds, "result": result}
        write_json_atomic(self.path, self.done)
        self.log(f"[{name}] finished in {seconds:.1f}s")
        return result
