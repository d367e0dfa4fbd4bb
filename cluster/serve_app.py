"""The Ray Serve application: ``POST /v1/synthesize``, ``GET /healthz``, ``/openapi.json``.

Deployments: one per tool (``ToolServer``; ``@serve.batch`` groups calls across requests,
then the tool core runs them as one batch), the policy engine (``EngineActor``, which
batches concurrent episodes' turns), and the ``agent`` ingress that composes them and runs
the same ``EpisodeRunner`` as training. Backpressure: the agent takes at most
``serve.max_ongoing_requests`` at once per replica and queues ``serve.max_queued_requests``;
beyond that Serve answers 503.
"""
# no `from __future__ import annotations`: FastAPI must see the real `Request` type in the class-based ingress

import asyncio
import base64
import dataclasses
import io
import json
import uuid
from typing import Any, Dict, List, Mapping

import numpy as np
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from PIL import Image
from ray import serve
from ray.serve.config import BackpressureConfig

from actors.registry import build_tool, resources_of
from actors.service import ToolService
from cluster.config import AppConfig
from cluster.serve_auth import KeyGuard, keys_for_start
from cluster.serve_auth import install as install_auth
from cluster.serve_request import FIELDS, RequestError, RequestLimits, SynthesizeRequest, check_fields, parse_json
from rollout.config import EpisodeConfig

RETRY_AFTER_S = 2  # what a 503 tells the client to wait
DRAIN_SETTLE_S = 1.0  # after the last request in flight: time for its answer to pass the proxy
HEALTH_TIMEOUT_S = 1.0  # a part that does not answer in time is down (a replica being replaced)
HEALTH_CHECK_PERIOD_S = 2.0  # how often Serve's controller checks a tool or policy replica: a crash is replaced sooner
TOOL_NAMES = ("prompt_gen", "image_gen", "quality_eval", "knowledge", "mask_gen")
JSON_BODY = {
    "type": "object", "required": ["image", "category", "defect_type"], "additionalProperties": False,
    "properties": {
        "image": {"type": "string", "description": "normal image, base64 PNG or JPEG"},
        "category": {"type": "string", "example": "bottle"},
        "defect_type": {"type": "string", "example": "broken_large"},
        "n": {"type": "integer", "minimum": 1, "default": 1},
        "seed": {"type": "integer", "minimum": 0, "default": 0},
        "mask": {"type": "string", "description": "optional base64 PNG, the image's size: where the defect may go"},
    },
}
MULTIPART_BODY = {"type": "object", "required": ["image", "category", "defect_type"], "properties": {
    **{k: v for k, v in JSON_BODY["properties"].items() if k not in ("image", "mask")},
    "image": {"type": "string", "format": "binary"}, "mask": {"type": "string", "format": "binary"}}}


class ToolServer:
    """One tool behind Serve: cross-request batching, then the tool core's own batch."""

    def __init__(self, name: str, tools_cfg):
        r = resources_of(name, tools_cfg)
        self.service = ToolService(build_tool(name, tools_cfg), r.timeout_s, r.max_batch_size, batch_wait_ms=0.0)
        self.call_batch.set_max_batch_size(r.max_batch_size)
        self.call_batch.set_batch_wait_timeout_s(r.batch_wait_ms / 1000.0)
        self.batch_sizes: List[int] = []

    @serve.batch(max_batch_size=8, batch_wait_timeout_s=0.01)
    async def call_batch(self, arguments: List[Any], images: List[Any], context: List[Any]) -> List[dict]:
        self.batch_sizes.append(len(arguments))
        return list(await asyncio.gather(*(self.service.call(a, i, c) for a, i, c in zip(arguments, images, context))))

    async def call(self, arguments, images=None, context=None) -> dict:
        return await self.call_batch(arguments, images, context)

    def check_health(self) -> None:  # Serve restarts a replica whose check raises
        self.service.health()

    async def stats(self) -> dict:
        n = len(self.batch_sizes)
        return {**self.service.stats(), "serve_batches": n, "serve_mean_batch": sum(self.batch_sizes) / n if n else 0.0}


class Unavailable(Exception):
    """A deployment stayed unreachable through every retry: the request gets a 503 with
    ``Retry-After``, never a 500 (Serve restarts the replica meanwhile)."""


RETRY_DELAYS_S = (0.5, 1.0, 2.0, 4.0)  # waits between calls to a dead replica: Serve needs a few seconds to replace it


def _replica_gone(e: BaseException) -> bool:
    import ray
    from ray.serve.exceptions import BackPressureError, DeploymentUnavailableError, ReplicaUnavailableError

    return isinstance(e, (ray.exceptions.RayActorError, ray.exceptions.ActorUnavailableError, BackPressureError,
                          DeploymentUnavailableError, ReplicaUnavailableError))


def replicas_not_running() -> List[str]:
    """Deployments of this app, as Serve's controller sees them, with a replica that is not
    running (being replaced after a crash, starting) or a status other than healthy."""
    app = serve.get_replica_context().app_name
    status = serve.status().applications.get(app)
    if status is None:
        return []
    return sorted(name for name, d in status.deployments.items()
                  if d.status != "HEALTHY" or any(k != "RUNNING" and v for k, v in d.replica_states.items()))  # str enums


async def call_with_retry(what: str, call):
    """``await call()``; a replica that died under the request is retried (Serve routes the
    retry to a live or restarted one), then ``Unavailable``. A tool call is idempotent."""
    for delay in (*RETRY_DELAYS_S, None):
        try:
            return await call()
        except Exception as e:  # noqa: BLE001 - only the replica-gone family is retried
            if not _replica_gone(e):
                raise
            if delay is None:
                raise Unavailable(f"{what} is unavailable: {type(e).__name__}") from None
            await asyncio.sleep(delay)


class _HandleTool:
    """A tool deployment handle as the episode's ``ToolCaller``."""

    def __init__(self, name: str, handle):
        self.name, self.handle = name, handle

    async def call(self, arguments, images=None, context=None) -> dict:
        return await call_with_retry(f"tool {self.name}", lambda: self.handle.call.remote(arguments, images, context))


class _HandleLLM:
    """The policy deployment handle as a verl-style LLM server for ``ServerLLM``."""

    def __init__(self, handle):
        self.handle = handle

    async def generate(self, request_id: str, prompt_ids, sampling_params, image_data=None):
        return await call_with_retry("the policy engine", lambda: self.handle.generate.remote(
            request_id=request_id, prompt_ids=prompt_ids, sampling_params=sampling_params, image_data=image_data))


def png_base64(array: np.ndarray) -> str:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode()


def _plain(obj):
    """JSON-safe copy (numpy scalars and arrays in tool logs)."""
    return json.loads(json.dumps(obj, default=lambda o: o.tolist() if hasattr(o, "tolist") else str(o)))


async def synthesize_samples(req: SynthesizeRequest, tokenizer, llm, tools: Mapping[str, Any],
                             episode_cfg: EpisodeConfig, request_id: str, processor=None, max_attempts: int = 1,
                             tool_chain: bool = False) -> Dict[str, Any]:
    """Run ``req.n`` samples concurrently; each is an episode gated on delivery
    (rollout/finalize.py) and run again with a new seed, up to ``max_attempts``. Only
    passing samples are returned; the rest are counted with their gate verdicts."""
    from cluster.synthesize_cmd import RETRY_SEED_STRIDE
    from rollout.episode import EpisodeRunner
    from rollout.finalize import deliver
    from rollout.tasks import Task

    async def one(k: int):
        tries = []
        for attempt in range(1, max_attempts + 1):
            seed = req.seed + k + (attempt - 1) * RETRY_SEED_STRIDE
            task = Task(f"{request_id}-{k}-a{attempt}", req.category, req.defect_type, "<request>", seed, req.region)
            ep = await EpisodeRunner(task, req.image, tokenizer, llm, tools, episode_cfg, task.task_id,
                                     processor=processor).run()
            record = ep.record()
            d = await deliver(record, tools, seed=seed, tool_chain=tool_chain)
            tries.append(d.summary())
            if d.passed:
                return d, record, tries
        return None, record, tries

    results = await asyncio.gather(*(one(k) for k in range(req.n)))
    h, w = req.image.shape[:2]
    ok = [(d, r, t) for d, r, t in results if d is not None]
    return {
        "request_id": request_id, "width": w, "height": h,
        "images": [png_base64(d.sample.image) for d, _, _ in ok],
        "masks": [png_base64(d.sample.mask) for d, _, _ in ok],
        "failed": len(results) - len(ok),
        "failures": [_plain({"attempts": t}) for d, _, t in results if d is None],
        "trajectories": [_plain({
            "episode_id": r["episode_id"], "source": d.source, "final_image_index": d.sample.image_index,
            "status": r["status"], "turns": r["turns"], "actions": r["actions"], "answer": r["answer"],
            "qe_scores": r["qe_scores"], "tool_log": r["tool_log"], "gate": t,
            "text": tokenizer.decode(r["response_ids"], skip_special_tokens=False)}) for d, r, t in ok],
    }


def build_app(cfg: AppConfig, policy_path: str, engine=None):
    """The bound Serve application for ``serve.run``. ``engine``: (class, args) deployed as
    the policy instead of our ``EngineActor`` (tests and the benchmarks' fixed pipelines)."""
    from policy.engine import EngineActor

    sc = cfg.serve
    api = FastAPI(title="AnomalyAgent", version="1",
                  description="Agentic industrial anomaly synthesis: a normal image in, defect images and masks out.")
    keys = keys_for_start(sc)
    if keys:
        install_auth(api, KeyGuard(keys, sc.rate_limit_per_minute, sc.rate_limit_burst))

    @serve.deployment(name="agent", num_replicas=sc.agent_replicas, max_ongoing_requests=sc.max_ongoing_requests,
                      max_queued_requests=sc.max_queued_requests, ray_actor_options={"num_cpus": sc.agent_num_cpus},
                      backpressure_config=BackpressureConfig(status_code=503, retry_after_s=RETRY_AFTER_S),
                      health_check_period_s=10)
    @serve.ingress(api)
    class AgentServer:
        def __init__(self, policy, tools: Dict[str, Any], policy_path: str, episode_cfg: EpisodeConfig,
                     limits: RequestLimits, timeout_s: float, max_attempts: int = 1, tool_chain: bool = False):
            from transformers import AutoTokenizer

            from rollout.verl_adapter import ServerLLM

            from rollout.vision import processor_for

            self.tokenizer = AutoTokenizer.from_pretrained(policy_path)
            self.processor = processor_for(policy_path)
            self.policy, self.tool_handles = policy, tools
            self.llm = ServerLLM(_HandleLLM(policy))
            self.tools = {n: _HandleTool(n, h) for n, h in tools.items()}
            self.episode_cfg, self.limits, self.timeout_s = episode_cfg, limits, timeout_s
            self.max_attempts, self.tool_chain = max_attempts, tool_chain
            self.in_flight, self.draining = 0, False

        def drain(self) -> int:
            """Stop taking requests (503 + Retry-After from now on); the number still in flight."""
            self.draining = True
            return self.in_flight

        async def _parse(self, request: Request) -> SynthesizeRequest:
            length = request.headers.get("content-length")
            if length and length.isdigit() and int(length) > self.limits.max_bytes:
                raise RequestError(413, f"request body is {length} bytes, more than the limit {self.limits.max_bytes}")
            ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
            if ctype == "application/json":
                return parse_json(await request.body(), self.limits)
            if ctype == "multipart/form-data":
                body = await request.body()
                if len(body) > self.limits.max_bytes:
                    raise RequestError(413, f"request body is {len(body)} bytes, more than the limit {self.limits.max_bytes}")
                try:
                    form = await request.form(max_files=2, max_fields=len(FIELDS))
                except Exception as e:  # noqa: BLE001 - any parse failure is the client's
                    raise RequestError(400, f"malformed multipart body: {e}"[:300]) from None
                fields = {k: v for k, v in form.items() if not hasattr(v, "read")}
                files = {k: await v.read() for k, v in form.items() if hasattr(v, "read")}
                if "image" not in files:
                    raise RequestError(422, "missing file part: image", "image")
                return check_fields({**fields, **{k: None for k in files}}, files["image"], files.get("mask"),
                                    self.limits, from_form=True)
            raise RequestError(415, f"content type {ctype or 'none'!r} is not accepted; send application/json "
                                    "or multipart/form-data")

        @api.post("/v1/synthesize", summary="Synthesize n defect images and masks on a normal image",
                  openapi_extra={"requestBody": {"required": True, "content": {
                      "application/json": {"schema": JSON_BODY}, "multipart/form-data": {"schema": MULTIPART_BODY}}}})
        async def synthesize(self, request: Request):
            try:
                req = await self._parse(request)
            except RequestError as e:
                return JSONResponse(e.to_dict(), status_code=e.status)
            if self.draining:
                return JSONResponse({"error": "the server is shutting down"}, status_code=503,
                                    headers={"Retry-After": str(RETRY_AFTER_S)})
            rid = uuid.uuid4().hex[:12]
            self.in_flight += 1
            try:
                out = await asyncio.wait_for(
                    synthesize_samples(req, self.tokenizer, self.llm, self.tools, self.episode_cfg, rid, self.processor,
                                       self.max_attempts, self.tool_chain), self.timeout_s)
            except asyncio.TimeoutError:
                return JSONResponse({"error": f"not done within {self.timeout_s:g}s"}, status_code=504)
            except Unavailable as e:
                return JSONResponse({"error": str(e)}, status_code=503, headers={"Retry-After": str(RETRY_AFTER_S)})
            finally:
                self.in_flight -= 1
            return JSONResponse(out)

        @api.get("/healthz", summary="Liveness of the agent, the policy and every tool (503 while one is down)")
        async def healthz(self):
            async def part(handle):  # a replica being replaced does not answer: that part is down, said in time
                try:
                    return await asyncio.wait_for(handle.stats.remote(), HEALTH_TIMEOUT_S)
                except Exception as e:  # noqa: BLE001 - any failure is "down"
                    return {"down": type(e).__name__}

            names = list(self.tool_handles)
            parts = await asyncio.gather(*(part(self.tool_handles[n]) for n in names), part(self.policy))
            tools, policy = dict(zip(names, parts[:-1])), parts[-1]
            down = [n for n, p in [*tools.items(), ("policy", policy)] if "down" in p]
            replacing = await asyncio.to_thread(replicas_not_running)
            down += [d for d in replacing if d.removeprefix("tool_") not in down]
            body = {"ok": not down, "down": down, "in_flight": self.in_flight, "policy": policy, "tools": tools}
            return body if not down else JSONResponse(body, status_code=503, headers={"Retry-After": str(RETRY_AFTER_S)})

        def check_health(self) -> None:
            pass

    tools = {}
    for name in TOOL_NAMES:
        r = resources_of(name, cfg.tools)
        tools[name] = serve.deployment(ToolServer, name=f"tool_{name}").options(
            num_replicas=r.replicas, max_ongoing_requests=max(r.max_concurrency, 2 * sc.max_ongoing_requests),
            health_check_period_s=HEALTH_CHECK_PERIOD_S,
            ray_actor_options={"num_cpus": r.num_cpus, "num_gpus": r.num_gpus}).bind(name, cfg.tools)
    e = cfg.policy.engine
    cls, args = engine or (EngineActor, (policy_path, e.max_batch_size, e.batch_wait_ms, cfg.seed, e.prefix_cache_tokens,
                                         e.continuous_batching))
    policy = serve.deployment(cls, name="policy").options(
        num_replicas=e.replicas, max_ongoing_requests=1000, health_check_period_s=HEALTH_CHECK_PERIOD_S,
        ray_actor_options={"num_cpus": e.num_cpus, "num_gpus": e.num_gpus}).bind(*args)
    limits = RequestLimits(sc.max_bytes, sc.max_pixels, sc.min_side, sc.max_n, list(sc.formats),
                           list(cfg.tools.knowledge.extra))
    episode = dataclasses.replace(cfg.episode, temperature=cfg.synthesize.temperature)  # delivery decodes as synthesize
    return AgentServer.bind(policy, tools, policy_path, episode, limits, sc.request_timeout_s,
                            cfg.synthesize.max_attempts, cfg.synthesize.tool_chain_fallback)


def drain_and_stop(app: str, timeout_s: float) -> int:
    """Shut the endpoint down cleanly: the agent stops taking requests, those in flight get
    up to ``timeout_s`` to finish, then Serve stops. Returns how many were cut off."""
    import time

    agent = serve.get_deployment_handle("agent", app_name=app)
    deadline = time.monotonic() + timeout_s
    left = agent.drain.remote().result()
    while left and time.monotonic() < deadline:
        time.sleep(0.2)  # polling the agent's own count, not a synchronization
        left = agent.drain.remote().result()
    time.sleep(DRAIN_SETTLE_S)  # the agent is done with a request before its answer has left the HTTP proxy
    serve.shutdown()
    return left


def start_serve(cfg: AppConfig, policy_path: str, name: str = "anomalyagent", route_prefix: str = "/",
                engine=None) -> str:
    """Deploy on the current Ray cluster; returns the base URL."""
    serve.start(http_options={"host": cfg.serve.host, "port": cfg.serve.port})
    serve.run(build_app(cfg, policy_path, engine), name=name, route_prefix=route_prefix, blocking=False)
    return f"http://{cfg.serve.host}:{cfg.serve.port}{route_prefix.rstrip('/')}"
