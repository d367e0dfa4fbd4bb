"""Our episode as verl sees it: registered under its agent name, built the way verl's
agent-loop worker builds loops (hydra instantiate from the registry), run against an LLM
server client, returning an AgentLoopOutput verl can post-process."""
import asyncio

import hydra
from transformers import AutoTokenizer
from verl.experimental.agent_loop.agent_loop import AgentLoopOutput, _agent_loop_registry

from rollout.config import EpisodeConfig
from rollout.data import MVTecAD
from rollout.tasks import make_tasks
from policy.server_output import token_output
from rollout.verl_adapter import AGENT_NAME, minimal_trainer_config
from tests.scripted import WELL_FORMED, local_tools


class ScriptedServerClient:
    """Stands where verl's LLMServerClient stands: generate(request_id, *, prompt_ids, sampling_params)."""

    def __init__(self, tok):
        self.turns = [tok.encode(t, add_special_tokens=False) for t in WELL_FORMED]
        self.seen = []

    async def generate(self, request_id, *, prompt_ids, sampling_params, **kwargs):
        self.seen.append(sampling_params)
        ids = self.turns[len(self.seen) - 1]
        return token_output(ids, [-0.1] * len(ids), "completed")


def test_registered_loop_runs_like_verl_runs_it(tiny_models, syn_root):
    import rollout.verl_adapter  # noqa: F401  (registers the loop)

    assert AGENT_NAME in _agent_loop_registry
    tok = AutoTokenizer.from_pretrained(tiny_models["text"])
    server = ScriptedServerClient(tok)
    loop = hydra.utils.instantiate(_agent_loop_registry[AGENT_NAME], trainer_config=minimal_trainer_config(),
                                   server_manager=server, tokenizer=tok, processor=None, dataset_cls=None,
                                   data_config=None, tools=local_tools(), episode_config=EpisodeConfig(max_turns=10))
    task = [t for t in make_tasks(MVTecAD(syn_root), ["syn_pill"]) if t.defect_type == "crack"][0]
    out = asyncio.run(loop.run({"temperature": 0.7, "top_p": 0.9}, task=task.to_dict()))
    assert isinstance(out, AgentLoopOutput)
    assert len(out.response_ids) == len(out.response_mask) == len(out.response_logprobs)
    assert sum(out.response_mask) == sum(len(t) for t in server.turns)
    assert server.seen[0]["temperature"] == 0.7 and server.seen[0]["top_p"] == 0.9  # verl's sampling wins
    d = out.as_dict()  # what verl's worker turns into tensors
    assert d["responses"].shape == d["response_mask"].shape == d["rollout_log_probs"].shape
    assert out.extra_fields["episode"]["status"] == "answer"


def compose_verl_config(overrides=()):
    """Our configs/verl_grpo.yaml composed onto verl's own ppo_trainer config, as main_ppo does."""
    from pathlib import Path

    from hydra import compose, initialize_config_dir

    configs = Path(__file__).resolve().parents[2] / "configs"
    with initialize_config_dir(config_dir=str(configs), version_base=None):
        return compose(config_name="verl_grpo", overrides=list(overrides))


def test_shipped_verl_config_composes_onto_verls_trainer_config():
    cfg = compose_verl_config()
    assert cfg.algorithm.adv_estimator == "grpo" and cfg.actor_rollout_ref.rollout.n == 8
    assert cfg.actor_rollout_ref.rollout.name == "vllm" and cfg.actor_rollout_ref.actor.strategy == "fsdp"
    assert cfg.actor_rollout_ref.rollout.agent.default_agent_loop == AGENT_NAME
    assert cfg.trainer.n_gpus_per_node == 8 and "critic" in cfg  # verl's own sections are all there


def test_verl_loads_our_loop_from_the_yaml_and_our_reward_function(ray_local, tiny_models, syn_root):
    """The two lookups verl's trainer does: the agent-loop registry file (with verl's own empty
    tool list, so our tools start from ``anomalyagent.config``) and the custom reward function."""
    from omegaconf import OmegaConf
    from verl.experimental.agent_loop.agent_loop import DictConfigWrap, ToolListWrap
    from verl.trainer.ppo.reward import get_custom_reward_fn

    cfg = compose_verl_config(["anomalyagent.overrides=['tools.knowledge.embedder=hashing','episode.max_turns=10']",
                               "anomalyagent.config=configs/cpu.yaml"])
    entry = [e for e in OmegaConf.load(cfg.actor_rollout_ref.rollout.agent.agent_loop_config_path) if e.name == AGENT_NAME][0]
    tok = AutoTokenizer.from_pretrained(tiny_models["text"])
    server = ScriptedServerClient(tok)
    loop = hydra.utils.instantiate(entry, trainer_config=DictConfigWrap(config=cfg), server_manager=server, tokenizer=tok,
                                   processor=None, hf_model_type=None, dataset_cls=None,
                                   data_config=DictConfigWrap(cfg.data), tools=ToolListWrap([]))
    assert set(loop.tools) == {"prompt_gen", "image_gen", "quality_eval", "knowledge", "mask_gen"}
    task = [t for t in make_tasks(MVTecAD(syn_root), ["syn_pill"]) if t.defect_type == "crack"][0]
    out = asyncio.run(loop.run({"temperature": 1.0}, extra_info={"task": task.to_dict()}))
    episode = out.extra_fields["episode"]
    assert episode["status"] == "answer"

    score_fn = get_custom_reward_fn(cfg)
    score = score_fn(data_source="anomalyagent", solution_str="", ground_truth=None, extra_info={"episode": episode})
    assert set(score) == {"score", "task", "reflection", "behaviour"} and score["score"] > 0
