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
from rollout.verl_adapter import AGENT_NAME, minimal_trainer_config, token_output
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
