"""Thin Ray actors around ``ToolService``, and a client-side pool over a tool's replicas.

Placement (CPUs, GPU fraction, replicas, restarts) comes from the tool's config section.
Actors are async with ``max_concurrency`` so concurrent callers meet in the batcher; with
``max_restarts``/``max_task_retries`` Ray restarts a dead actor and re-sends its calls.
Images travel as uint8 numpy arrays through the object store.
"""
from __future__ import annotations

import itertools
from typing import Any, Dict, List, Optional

import ray

from actors.config import ActorResources, ToolsConfig
from actors.errors import ToolError
from actors.registry import build_tool, resources_of
from actors.service import ToolService


class ToolActor:
    def __init__(self, name: str, tools: ToolsConfig, inject: Optional[Dict[str, Any]] = None):
        r = resources_of(name, tools)
        self.service = ToolService(build_tool(name, tools, **(inject or {})), r.timeout_s, r.max_batch_size,
                                   r.batch_wait_ms)

    async def call(self, arguments, images=None, context=None) -> dict:
        return await self.service.call(arguments, images, context)

    async def check_health(self) -> dict:
        return self.service.health()

    async def stats(self) -> dict:
        return self.service.stats()

    def pid(self) -> int:
        import os

        return os.getpid()


def actor_options(r: ActorResources) -> dict:
    return dict(num_cpus=r.num_cpus, num_gpus=r.num_gpus, max_restarts=r.max_restarts,
                max_task_retries=r.max_restarts, max_concurrency=r.max_concurrency,
                scheduling_strategy="SPREAD")  # replicas on different nodes: a lost node takes only its share


class ToolPool:
    """A tool's replicas; calls go round-robin. A replica that is gone for good answers as
    an ``unavailable`` tool error, so the caller sees an observation, not an exception."""

    def __init__(self, name: str, tools: Optional[ToolsConfig] = None, replicas: Optional[int] = None,
                 inject: Optional[Dict[str, Any]] = None, handles: Optional[List[Any]] = None):
        self.name = name
        if handles is None:
            r = resources_of(name, tools)
            remote = ray.remote(ToolActor)
            handles = [remote.options(**actor_options(r)).remote(name, tools, inject) for _ in range(replicas or r.replicas)]
        self.actors: List[Any] = list(handles)
        self._next = itertools.cycle(range(len(self.actors)))

    def __reduce__(self):  # travels to other actors as its handles
        return (ToolPool, (self.name, None, None, None, self.actors))

    def actor(self):
        return self.actors[next(self._next)]

    async def call(self, arguments, images=None, context=None) -> dict:
        try:
            return await self.actor().call.remote(arguments, images, context)
        except ray.exceptions.RayActorError as e:
            return {"ok": False, "error": ToolError("unavailable", f"tool actor died: {type(e).__name__}", None,
                                                    self.name).to_dict()}

    def call_sync(self, arguments, images=None, context=None, timeout: Optional[float] = None) -> dict:
        return ray.get(self.actor().call.remote(arguments, images, context), timeout=timeout)

    def check_health(self, timeout: float = 30.0) -> List[dict]:
        return ray.get([a.check_health.remote() for a in self.actors], timeout=timeout)

    def stats(self) -> List[dict]:
        return ray.get([a.stats.remote() for a in self.actors])


def start_tools(tools: ToolsConfig, names=("prompt_gen", "image_gen", "quality_eval", "knowledge", "mask_gen"),
                inject: Optional[Dict[str, Dict[str, Any]]] = None) -> Dict[str, ToolPool]:
    return {n: ToolPool(n, tools, inject=(inject or {}).get(n)) for n in names}
