"""Episode records and on-policy batches for the learner tests (single process, FSDP, replicated)."""
import numpy as np
import torch

from policy.learner import response_log_probs


def episodes(n_groups=2, g=2, seed=0):
    rng = np.random.default_rng(seed)
    out = []
    for k in range(n_groups * g):
        n_resp = int(rng.integers(10, 16))
        mask = [1] * 5 + [0] * 3 + [1] * (n_resp - 8)
        out.append({"episode_id": f"e{k}", "group": f"g{k // g}", "prompt_ids": rng.integers(20, 200, 6).tolist(),
                    "response_ids": rng.integers(20, 200, n_resp).tolist(), "response_mask": mask,
                    "response_logprobs": (-rng.random(n_resp)).tolist()})
    return out


def on_policy(batch, learner):
    with torch.no_grad():
        batch.batch["old_log_probs"] = response_log_probs(learner.model, batch)
    return batch
