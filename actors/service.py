"""The Ray-free service around one tool core: schema check, per-call timeout, dynamic
batching, failure accounting. The Ray actor (``actors.ray_actors``) is a thin shell over
this, so everything here is testable in plain asyncio."""
from __future__ import annotations

import asyncio
import time
from typing import Any, Dict, Optional

import numpy as np

from actors.batching import DynamicBatcher
from actors.errors import ToolError
from actors.schema import check_image, check_result, validate_arguments
from actors.tool import Tool, ToolRequest


class ToolService:
    def __init__(self, tool: Tool, timeout_s: float = 60.0, max_batch_size: int = 8, batch_wait_ms: float = 5.0):
        self.tool = tool
        self.timeout_s = timeout_s
        self.batcher = DynamicBatcher(tool.run_batch, max_batch_size, batch_wait_ms)
        self.calls = 0
        self.errors: Dict[str, int] = {}
        self.started = time.monotonic()

    def _error(self, e: ToolError) -> dict:
        self.errors[e.code] = self.errors.get(e.code, 0) + 1
        return {"ok": False, "error": e.to_dict()}

    async def call(self, arguments: Any, images: Optional[Dict[str, np.ndarray]] = None,
                   context: Optional[Dict[str, Any]] = None) -> dict:
        """``{"ok": True, "result": ...}`` or ``{"ok": False, "error": ToolError fields}``; never raises."""
        self.calls += 1
        name = self.tool.name
        try:
            validate_arguments(name, self.tool.schema, arguments)
            images = images or {}
            for key in self.tool.required_images:
                check_image(name, key, images.get(key))
            req = ToolRequest(dict(arguments), images, dict(context or {}))
            result = await asyncio.wait_for(self.batcher.submit(req), self.timeout_s)
            if not isinstance(result, ToolError):
                check_result(name, self.tool.result_keys, result)
        except ToolError as e:
            return self._error(e if e.tool else ToolError(e.code, e.message, e.field, name))
        except asyncio.TimeoutError:
            return self._error(ToolError("timeout", f"no answer within {self.timeout_s:g}s", None, name))
        except Exception as e:  # noqa: BLE001 - a failing tool is an observation, not a crash
            return self._error(ToolError("tool_failure", f"{type(e).__name__}: {e}"[:300], None, name))
        if isinstance(result, ToolError):
            return self._error(result if result.tool else ToolError(result.code, result.message, result.field, name))
        return {"ok": True, "result": result}

    def health(self) -> dict:
        """Raises when the tool is stuck in one batch for longer than its timeout."""
        stuck = self.batcher.stuck_for()
        if stuck > self.timeout_s:
            raise RuntimeError(f"{self.tool.name} has been busy in one batch for {stuck:.0f}s (timeout {self.timeout_s:g}s)")
        return {"tool": self.tool.name, "ok": True}

    def stats(self) -> dict:
        b = self.batcher
        return {"tool": self.tool.name, "calls": self.calls, "errors": dict(self.errors), "batches": b.batches,
                "items": b.items, "mean_batch": b.items / b.batches if b.batches else 0.0,
                "busy_s": b.busy_s, "uptime_s": time.monotonic() - self.started}
