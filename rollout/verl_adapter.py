"""The one module that touches verl's experimental agent-loop API (it changes between
releases). Our episode (``rollout.episode``) is registered as the verl agent loop
``anomaly_agent``; the same class runs in our rollout workers on any Ray cluster and
inside verl's own trainer (``python -m verl.trainer.main_ppo``) on GPU clusters.
"""
from __future__ import annotations

from typing import Any, Dict, List, Mapping, Optional

from omegaconf import OmegaConf
from verl.experimental.agent_loop.agent_loop import (
    AgentLoopBase,
    AgentLoopMetrics,
    AgentLoopOutput,
    DictConfigWrap,
    register,
)

from rollout.config import EpisodeConfig
from rollout.episode import EpisodeRunner, Generation
from rollout.grammar import CONSTRAINED_FIELD
from rollout.tasks import Task
from rollout.vision import VisionRenderer

AGENT_NAME = "anomaly_agent"


class ServerLLM:
    """Adapts a verl LLM-server client (or our engine actor handle) to the episode's ``LLM``."""

    def __init__(self, server, sampling_overrides: Optional[Dict[str, Any]] = None, is_actor: bool = False):
        self.server, self.overrides, self.is_actor = server, dict(sampling_overrides or {}), is_actor

    async def generate(self, request_id: str, prompt_ids: List[int], sampling_params: Dict[str, Any],
                       image_data: Optional[list] = None) -> Generation:
        params = {**sampling_params, **{k: v for k, v in self.overrides.items() if k in ("temperature", "top_p")}}
        call = self.server.generate.remote if self.is_actor else self.server.generate
        vision = {"image_data": image_data} if image_data else {}
        out = await call(request_id=request_id, prompt_ids=prompt_ids, sampling_params=params, **vision)
        stop = "length" if out.stop_reason not in (None, "completed") else "completed"
        constrained = bool((getattr(out, "extra_fields", None) or {}).get(CONSTRAINED_FIELD, False))
        return Generation(list(out.token_ids), list(out.log_probs or []), stop, constrained)


def minimal_trainer_config(prompt_length: int = 1024, response_length: int = 2048):
    """The slice of verl's trainer config an agent loop reads, for use outside verl's trainer."""
    return DictConfigWrap(OmegaConf.create({"actor_rollout_ref": {"rollout": {
        "prompt_length": prompt_length, "response_length": response_length}}}))


@register(AGENT_NAME)
class AnomalyAgentLoop(AgentLoopBase):
    """verl agent loop running one AnomalyAgent episode.

    ``tools`` maps tool names to callers (our ``ToolPool``s); inside verl's trainer, where
    no tools are passed, they are started once per worker process from the config file
    named by ``anomalyagent.config`` in the trainer config.
    """

    _shared_tools: Optional[Mapping[str, Any]] = None

    def __init__(self, trainer_config, server_manager, tokenizer, processor=None, dataset_cls=None,
                 data_config=None, tools: Optional[Mapping[str, Any]] = None,
                 episode_config: Optional[EpisodeConfig] = None, **kwargs):
        super().__init__(trainer_config, server_manager, tokenizer, processor, dataset_cls,
                         data_config or DictConfigWrap(OmegaConf.create({})), **kwargs)
        if not isinstance(tools, Mapping):  # inside verl's trainer: its own (empty) tool list, not our pools
            tools = None
        app_cfg = None
        if tools is None or episode_config is None:
            app_cfg = self._app_config()
        self.tools = tools if tools is not None else self._tools_from(app_cfg)
        self.episode_config = episode_config or app_cfg.episode

    def _app_config(self):
        """The tools and episode sections of the preset named by verl's ``anomalyagent``
        config block (``config``, ``overrides``)."""
        from types import SimpleNamespace

        from actors.config import ToolsConfig
        from rollout.config import DEFAULT_PRESET, load_sections

        section = self.config.get("anomalyagent", {}) if hasattr(self.config, "get") else {}
        return SimpleNamespace(**load_sections(section.get("config", DEFAULT_PRESET), list(section.get("overrides", [])),
                                               {"tools": ToolsConfig, "episode": EpisodeConfig}))

    @classmethod
    def _tools_from(cls, app_cfg):
        if cls._shared_tools is None:
            from actors.ray_actors import start_tools

            cls._shared_tools = start_tools(app_cfg.tools)
        return cls._shared_tools

    async def run(self, sampling_params: Dict[str, Any], **kwargs) -> AgentLoopOutput:
        task = kwargs.get("task") or (kwargs.get("extra_info") or {}).get("task")
        if task is None:
            raise ValueError("anomaly_agent needs the task: a `task` field, or extra_info.task, in the dataset row")
        task = task if isinstance(task, Task) else Task(**dict(task))
        llm = ServerLLM(self.server_manager, sampling_params, is_actor=kwargs.get("server_is_actor", False))
        runner = EpisodeRunner(task, task.load_image(), self.tokenizer, llm, self.tools, self.episode_config,
                               kwargs.get("episode_id"), processor=self.processor)
        ep = await runner.run()
        images = VisionRenderer.image_data(ep.images, ep.shown_images)  # VL: verl builds the pixel inputs
        return AgentLoopOutput(
            prompt_ids=ep.prompt_ids, response_ids=ep.response_ids, response_mask=ep.response_mask,
            response_logprobs=ep.response_logprobs, num_turns=2 * ep.turns + 1,
            multi_modal_data={"images": images} if images else None,
            metrics=AgentLoopMetrics(generate_sequences=ep.timings["generate_s"], tool_calls=ep.timings["tools_s"]),
            extra_fields={"episode": ep.record()},
        )


def episode_of(output: AgentLoopOutput) -> Dict[str, Any]:
    return output.extra_fields["episode"]
