"""A scripted generation engine actor: turn n of every episode returns the n-th scripted
turn, so rollouts exercise every tool with exact, known tokens."""
from __future__ import annotations

from typing import List


class ScriptedEngine:
    def __init__(self, policy_path: str, turns: List[str]):
        from transformers import AutoTokenizer

        tok = AutoTokenizer.from_pretrained(policy_path)
        self.turn_ids = [tok.encode(t, add_special_tokens=False) for t in turns]
        self.calls = 0

    async def generate(self, request_id: str = "", *, prompt_ids, sampling_params, **kwargs):
        from policy.server_output import token_output

        self.calls += 1
        n = int(request_id.rsplit("-t", 1)[1])
        ids = self.turn_ids[min(n, len(self.turn_ids) - 1)][: sampling_params["max_tokens"]]
        return token_output(ids, [-0.5] * len(ids), "completed")

    def pid(self) -> int:
        import os

        return os.getpid()


class GroupContrastEngine(ScriptedEngine):
    """Sample 0 of every group follows the script, the others emit malformed turns, so each
    group has reward variance; accepts weight pushes like the real engine."""

    def __init__(self, policy_path: str, turns: List[str]):
        super().__init__(policy_path, turns)
        from transformers import AutoTokenizer

        self.bad = AutoTokenizer.from_pretrained(policy_path).encode("<thinking>x</thinking> oops", add_special_tokens=False)
        self.version = 0

    async def generate(self, request_id: str = "", *, prompt_ids, sampling_params, **kwargs):
        from policy.server_output import token_output

        episode = request_id.rsplit("-t", 1)[0]
        if episode.endswith("-g0"):
            return await super().generate(request_id, prompt_ids=prompt_ids, sampling_params=sampling_params)
        return token_output(self.bad, [-0.5] * len(self.bad), "completed")

    async def load_state_dict(self, state_dict, version=None) -> int:
        self.version = version if version is not None else self.version + 1
        return self.version
