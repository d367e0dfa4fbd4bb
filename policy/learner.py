"""The GRPO learner core (no Ray): verl's algorithms on our batches.

Batches are ``verl.DataProto`` built straight from stored episodes — the token ids as
generated, the response mask, the sampling-time log-probs — never re-tokenized. One
optimizer step: group-normalized GRPO advantages (``compute_grpo_outcome_advantage``),
zero-advantage groups dropped, PPO-clip surrogate (``get_policy_loss_fn('vanilla')``),
KL to a frozen reference policy (``kl_penalty``), aggregated with ``agg_loss`` over the
*global* token count, so with data parallelism each rank's loss is its share of the
single-process loss and averaged gradients equal the world-size-1 step.

``estimator: gae`` is PPO with a critic: a linear value head on the policy's last hidden
state (a shared trunk; verl's trainer uses a separate critic model), GAE over the policy
tokens (``compute_gae_advantage_return``, which skips observation tokens) from values
computed before the update, clipped value loss (``compute_value_loss``). verl whitens GAE
advantages over the batch; with several learner ranks we whiten per rank's shard.

With several ranks the modules are replicated or FSDP-sharded (``learner.sharding``,
policy/sharding.py); every rank runs the same forward/backward sequence — a rank whose
shard is empty runs it on a one-token placeholder with zero loss, because FSDP's gathers
are collectives.
"""
from __future__ import annotations

from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from verl import DataProto
from verl.trainer.ppo import core_algos
from verl.workers.config import ActorConfig

from policy.config import LearnerConfig
from policy.sharding import SHARDINGS, device_mesh, fully_shard_model, gather_model_state, sum_gradients, total_norm


def turn_spans(mask: Sequence[int]) -> List[Tuple[int, int]]:
    """[start, end) of each run of policy tokens: one per policy turn."""
    spans, start = [], None
    for t, m in enumerate(list(mask) + [0]):
        if m and start is None:
            start = t
        elif not m and start is not None:
            spans.append((start, t))
            start = None
    return spans


def grammar_masks(episodes: Sequence[Dict[str, Any]], resp_w: int, tokenizer) -> Optional[Dict[str, torch.Tensor]]:
    """The allowed ids the sampler renormalized over, replayed from each turn's grammar
    (rollout/grammar.py): ``allowed_idx`` [B, T] (-1: a free position) indexes each row's own
    ``allowed_sets`` [B, K, vocab]. None when no episode was sampled under a grammar."""
    from rollout.grammar import TurnGrammar, replay

    if not any(g for e in episodes for g in e.get("turn_grammars") or ()):
        return None
    vocab = len(tokenizer)
    idx = torch.full((len(episodes), resp_w), -1, dtype=torch.long)
    per_row: List[List[Tuple[int, ...]]] = []
    for i, e in enumerate(episodes):
        sets: Dict[Tuple[int, ...], int] = {}
        grammars, spans = e.get("turn_grammars") or [], turn_spans(e["response_mask"])
        if grammars and len(grammars) != len(spans):
            raise ValueError(f"episode {e['episode_id']}: {len(grammars)} turn grammars for {len(spans)} policy turns")
        resp = list(e["response_ids"])
        for spec, (a, b) in zip(grammars, spans):
            if spec is None:  # sampled freely
                continue
            for t, allowed in enumerate(replay(TurnGrammar.from_dict(spec), resp[a:b], tokenizer), start=a):
                if allowed is not None:
                    idx[i, t] = sets.setdefault(allowed, len(sets))
        per_row.append(list(sets))
    table = torch.zeros((len(episodes), max(1, max(len(r) for r in per_row)), vocab), dtype=torch.bool)
    for i, row in enumerate(per_row):
        for k, allowed in enumerate(row):
            table[i, k, list(allowed)] = True
    return {"allowed_idx": idx, "allowed_sets": table}


def batch_from_episodes(episodes: Sequence[Dict[str, Any]], rewards: Sequence[float], pad_id: int,
                        tokenizer=None) -> DataProto:
    """Right-padded ``input_ids = prompt + response``; the response part carries the mask,
    the rollout log-probs and the outcome reward on the last policy token. With
    ``tokenizer``, episodes sampled under a turn grammar also carry its allowed sets, so the
    learner's log-probs are those of the same constrained distribution."""
    n = len(episodes)
    width = max(len(e["prompt_ids"]) + len(e["response_ids"]) for e in episodes)
    resp_w = max(len(e["response_ids"]) for e in episodes)
    input_ids = torch.full((n, width), pad_id, dtype=torch.long)
    attention = torch.zeros((n, width), dtype=torch.long)
    prompt_len = torch.zeros(n, dtype=torch.long)
    responses = torch.full((n, resp_w), pad_id, dtype=torch.long)
    mask = torch.zeros((n, resp_w), dtype=torch.float32)
    old_lp = torch.zeros((n, resp_w), dtype=torch.float32)
    token_rewards = torch.zeros((n, resp_w), dtype=torch.float32)
    for i, (e, r) in enumerate(zip(episodes, rewards)):
        p, resp = list(e["prompt_ids"]), list(e["response_ids"])
        input_ids[i, : len(p) + len(resp)] = torch.tensor(p + resp)
        attention[i, : len(p) + len(resp)] = 1
        prompt_len[i] = len(p)
        responses[i, : len(resp)] = torch.tensor(resp)
        mask[i, : len(resp)] = torch.tensor(list(e["response_mask"]), dtype=torch.float32)
        old_lp[i, : len(resp)] = torch.tensor(list(e["response_logprobs"]), dtype=torch.float32)
        policy_positions = torch.nonzero(mask[i]).flatten()
        if len(policy_positions):
            token_rewards[i, policy_positions[-1]] = float(r)
    tensors = {"input_ids": input_ids, "attention_mask": attention, "prompt_len": prompt_len, "responses": responses,
               "response_mask": mask, "old_log_probs": old_lp, "token_level_rewards": token_rewards}
    masks = grammar_masks(episodes, resp_w, tokenizer) if tokenizer is not None else None
    if masks is not None:
        tensors.update(masks)
    return DataProto.from_dict(
        tensors=tensors,
        non_tensors={"uid": np.array([e["group"] for e in episodes], dtype=object),
                     "episode_id": np.array([e["episode_id"] for e in episodes], dtype=object)})


def add_advantages(batch: DataProto) -> DataProto:
    adv, _ = core_algos.compute_grpo_outcome_advantage(batch.batch["token_level_rewards"], batch.batch["response_mask"],
                                                       batch.non_tensor_batch["uid"])
    batch.batch["advantages"] = adv
    return batch


def drop_zero_advantage_groups(batch: DataProto) -> DataProto:
    keep = (batch.batch["advantages"].abs() * batch.batch["response_mask"]).sum(-1) > 0
    return batch.select_idxs(keep.numpy()) if not bool(keep.all()) else batch


def _response_slice(full: torch.Tensor, batch: DataProto) -> torch.Tensor:
    """(B, T_resp) from per-position values over the whole sequence, aligned so that response
    position t holds the value at the position that predicts response token t."""
    resp_w = batch.batch["responses"].shape[1]
    out = full.new_zeros((full.shape[0], resp_w))
    for i, p in enumerate(batch.batch["prompt_len"].tolist()):
        n = min(resp_w, full.shape[1] - (p - 1))
        out[i, :n] = full[i, p - 1: p - 1 + n]
    return out


class ValueHead(torch.nn.Module):
    """V(s_t) from the policy's last hidden state: the critic of ``estimator: gae``."""

    def __init__(self, hidden_size: int):
        super().__init__()
        self.proj = torch.nn.Linear(hidden_size, 1)
        torch.nn.init.zeros_(self.proj.weight)
        torch.nn.init.zeros_(self.proj.bias)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.proj(hidden).squeeze(-1)


def gae_advantages(batch: DataProto, values: torch.Tensor, gamma: float, lam: float):
    """verl's GAE on our batch: (advantages, returns), zero on observation tokens."""
    mask = batch.batch["response_mask"]
    adv, ret = core_algos.compute_gae_advantage_return(batch.batch["token_level_rewards"], values * mask, mask,
                                                       gamma, lam)
    return adv * mask, ret * mask


def _constrained(logits: torch.Tensor, batch: DataProto) -> torch.Tensor:
    """``logits`` [B, L-1, V] with each grammar-constrained response position's disallowed
    ids at -inf (the distribution the sampler drew from)."""
    if "allowed_idx" not in batch.batch.keys():
        return logits
    idx, sets = batch.batch["allowed_idx"], batch.batch["allowed_sets"]
    rows, cols = torch.nonzero(idx >= 0, as_tuple=True)
    if not len(rows):
        return logits
    at = batch.batch["prompt_len"][rows] - 1 + cols  # the position that predicts response token `cols`
    keep = at < logits.shape[1]
    rows, cols, at = rows[keep], cols[keep], at[keep]
    allowed = sets[rows, idx[rows, cols]]
    return logits.index_put((rows, at), logits[rows, at].masked_fill(~allowed, float("-inf")))


def response_log_probs(model, batch: DataProto, temperature: float = 1.0, with_entropy: bool = False,
                       value_head: "ValueHead | None" = None):
    """(B, T_resp) log-probs of the response tokens under ``model`` (teacher-forced, under
    the turn grammar where the batch carries one); with ``with_entropy`` also the entropy
    at each response position, with ``value_head`` also the values (same forward pass)."""
    ids, attn = batch.batch["input_ids"], batch.batch["attention_mask"]
    out_model = model(input_ids=ids, attention_mask=attn, output_hidden_states=value_head is not None)
    logits = _constrained(out_model.logits[:, :-1].float() / temperature, batch)
    logp_vocab = torch.log_softmax(logits, -1)
    logp_all = logp_vocab.gather(-1, ids[:, 1:, None]).squeeze(-1)  # logp of token t+1
    ent_all = torch.special.entr(logp_vocab.exp()).sum(-1) if with_entropy else None
    resp_w = batch.batch["responses"].shape[1]
    out = logp_all.new_zeros((ids.shape[0], resp_w))
    ent = logp_all.new_zeros((ids.shape[0], resp_w)) if with_entropy else None
    for i, p in enumerate(batch.batch["prompt_len"].tolist()):
        n = min(resp_w, logp_all.shape[1] - (p - 1))
        out[i, :n] = logp_all[i, p - 1: p - 1 + n]
        if with_entropy:
            ent[i, :n] = ent_all[i, p - 1: p - 1 + n].detach()
    if value_head is not None:
        values = _response_slice(value_head(out_model.hidden_states[-1][:, :-1].float()), batch)
        return out, ent, values
    return (out, ent) if with_entropy else out


def placeholder_batch(pad_id: int) -> DataProto:
    """One pad token of prompt and of response, nothing to learn from: what an FSDP rank
    with an empty shard runs so its collectives line up with the other ranks'."""
    one = torch.full((1, 1), pad_id, dtype=torch.long)
    zero = torch.zeros((1, 1), dtype=torch.float32)
    return DataProto.from_dict(
        tensors={"input_ids": torch.full((1, 2), pad_id, dtype=torch.long), "attention_mask": torch.ones((1, 2), dtype=torch.long),
                 "prompt_len": torch.ones(1, dtype=torch.long), "responses": one, "response_mask": zero,
                 "old_log_probs": zero, "token_level_rewards": zero, "advantages": zero},
        non_tensors={"uid": np.array(["placeholder"], dtype=object), "episode_id": np.array(["placeholder"], dtype=object)})


class PolicyLearner:
    """One rank's learner. ``world_size > 1`` needs torch.distributed initialized first."""

    def __init__(self, model_path: str, cfg: LearnerConfig, group_size: int = 4, world_size: int = 1):
        from transformers import AutoModelForCausalLM, AutoTokenizer

        if cfg.loss_agg_mode != "token-mean":
            raise ValueError("the learner's data-parallel step is exact for loss_agg_mode=token-mean only")
        if cfg.sharding not in SHARDINGS:
            raise ValueError(f"learner.sharding must be one of {SHARDINGS}, got {cfg.sharding!r}")
        self.cfg, self.dist = cfg, world_size > 1
        self.sharded = self.dist and cfg.sharding == "fsdp"
        self.device = torch.device("cuda", torch.cuda.current_device()) if torch.cuda.is_available() else torch.device("cpu")
        self.tokenizer = AutoTokenizer.from_pretrained(model_path)  # saved with checkpoints: they load alone
        self.pad_id = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        self.model = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.float32).to(self.device)
        self.model.train()
        self.ref = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.float32).to(self.device).eval()
        for p in self.ref.parameters():
            p.requires_grad_(False)
        self.value_head = ValueHead(self.model.config.hidden_size).to(self.device) if cfg.estimator == "gae" else None
        if self.sharded:
            mesh = device_mesh(world_size)
            compute = getattr(torch, cfg.param_dtype) if self.device.type == "cuda" else None
            for module in (self.model, self.ref) + ((self.value_head,) if self.value_head else ()):
                fully_shard_model(module, mesh, compute)
        # the optimizer's parameters by name: the key of a sharded optimizer state
        self.trained = torch.nn.ModuleDict({"policy": self.model, **({"critic": self.value_head} if self.value_head else {})})
        self.opt = torch.optim.AdamW(self.trained.parameters(), lr=cfg.lr, eps=cfg.adam_eps, weight_decay=0.0)
        self.actor_cfg = ActorConfig(strategy="fsdp", rollout_n=group_size, ppo_micro_batch_size_per_gpu=1,
                                     clip_ratio=cfg.clip_ratio, clip_ratio_low=cfg.clip_ratio,
                                     clip_ratio_high=cfg.clip_ratio, loss_agg_mode=cfg.loss_agg_mode)
        self.policy_loss = core_algos.get_policy_loss_fn("vanilla")

    def step(self, shard: DataProto, global_tokens: int) -> Dict[str, float]:
        """One optimizer step on this rank's shard. ``global_tokens`` counts policy tokens over
        every rank: each rank's loss is its token sum over that count, and gradients are
        summed across ranks, which is exactly the single-process token mean."""
        has_tokens = bool(len(shard)) and bool(shard.batch["response_mask"].sum() > 0)
        self.opt.zero_grad(set_to_none=True)
        metrics: Dict[str, float] = {}
        if not has_tokens and self.sharded:
            self._placeholder_pass()
        if has_tokens:
            shard = shard.to(self.device)
            mask = shard.batch["response_mask"]
            if self.value_head is not None:
                logp, entropy, vpreds = response_log_probs(self.model, shard, with_entropy=True,
                                                           value_head=self.value_head)
                old_values = vpreds.detach()  # the critic before this update, as at rollout time
                advantages, returns = gae_advantages(shard, old_values, self.cfg.gamma, self.cfg.lam)
            else:
                logp, entropy = response_log_probs(self.model, shard, with_entropy=True)
                advantages = shard.batch["advantages"]
            with torch.no_grad():
                ref_logp = response_log_probs(self.ref, shard)
            local_mean_pg, pg_metrics = self.policy_loss(shard.batch["old_log_probs"], logp, advantages,
                                                         mask, "token-mean", self.actor_cfg)
            pg = local_mean_pg * mask.sum() / global_tokens
            kl_mat = core_algos.kl_penalty(logp, ref_logp, self.cfg.kl_type)
            kl = core_algos.agg_loss(kl_mat, mask, "token-mean", dp_size=1, batch_num_tokens=global_tokens)
            loss = pg + self.cfg.kl_coef * kl
            if self.value_head is not None:
                vf_loss, vf_clipfrac = core_algos.compute_value_loss(vpreds, returns, old_values, mask,
                                                                     self.cfg.value_clip, "token-mean", dp_size=1,
                                                                     batch_num_tokens=global_tokens)
                loss = loss + self.cfg.value_coef * vf_loss
                metrics.update({"value_loss": float(vf_loss.detach()), "value_clipfrac": float(vf_clipfrac)})
            loss.backward()
            metrics.update({"loss": float(loss.detach()), "kl": float(kl.detach()),
                            "entropy": float((entropy * mask).sum() / mask.sum()),
                            **{k.split("/")[-1]: float(v) for k, v in pg_metrics.items()}})
        if self.dist and not self.sharded:
            sum_gradients(self.trainable())
        grad_norm = torch.nn.utils.clip_grad_norm_(self.trainable(), self.cfg.grad_clip)
        self.opt.step()
        metrics["grad_norm"] = total_norm(grad_norm)
        return metrics

    def _placeholder_pass(self) -> None:
        """The forward/backward sequence of a real step, on a placeholder, with zero loss."""
        batch = placeholder_batch(self.pad_id).to(self.device)
        if self.value_head is not None:
            logp, _, values = response_log_probs(self.model, batch, value_head=self.value_head)
            loss = (logp.sum() + values.sum()) * 0.0
        else:
            loss = response_log_probs(self.model, batch).sum() * 0.0
        with torch.no_grad():
            response_log_probs(self.ref, batch)
        loss.backward()

    def trainable(self):
        return list(self.trained.parameters())

    def parameter_counts(self) -> Dict[str, int]:
        """Trained parameters held on this rank vs in the model (sharded: about 1/world)."""
        local = sum((p.to_local() if hasattr(p, "to_local") else p).numel() for p in self.trainable())
        return {"local": local, "full": sum(p.numel() for p in self.trainable())}

    def state_dict(self) -> Dict[str, torch.Tensor]:
        """Full policy weights on CPU (sharded: a collective; rank 0 gets them, others ``{}``)."""
        return gather_model_state(self.model, self.sharded)
