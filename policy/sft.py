"""Stage 1: supervised fine-tuning on structured trajectories.

The loss is next-token cross-entropy on the policy's own tokens only (response mask 1);
the system prompt, task and every tool observation are context, never targets. AdamW with
linear warm-up then cosine decay to ``min_lr_ratio``; checkpoints (model, optimizer,
scheduler, RNG, data position) with ``resume`` auto / disable / path; TensorBoard scalars;
a progress bar. The batch order is a pure function of (seed, step), so a resumed run sees
exactly the batches the uninterrupted run would have seen.

A vision-language policy (a checkpoint with a ``vision_config``) trains through the same
loop: each trajectory's shown images become ``pixel_values``/``image_grid_thw`` of the
model's own forward (its ``<|image_pad|>`` runs are already in the token ids), and the
vision tower stays frozen with ``sft.freeze_vision`` (as published).
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional

import torch

from policy.checkpoint import CheckpointManager
from policy.config import SFTConfig


@dataclass
class Example:
    input_ids: List[int]
    labels: List[int]  # -100 where the token is not the policy's
    images: List[str] = field(default_factory=list)  # VL: the files of the shown images, in token order


def examples_from_parquet(path: str | Path) -> List[Example]:
    import pyarrow.parquet as pq

    path = Path(path)
    table = pq.read_table(path)
    vl = "image_paths" in table.column_names and any(table.column("image_paths").to_pylist())
    out = []
    for row in table.to_pylist():
        ids = row["prompt_ids"] + row["response_ids"]
        labels = [-100] * len(row["prompt_ids"]) + [t if m else -100 for t, m in zip(row["response_ids"], row["response_mask"])]
        images = [str(path.parent / row["image_paths"][k]) for k in row["shown_images"]] if vl else []
        out.append(Example(ids, labels, images))
    if not out:
        raise ValueError(f"no trajectories in {path}")
    return out


def collate(batch: List[Example], pad_id: int, image_processor=None) -> Dict[str, torch.Tensor]:
    width = max(len(e.input_ids) for e in batch)
    ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
    labels = torch.full((len(batch), width), -100, dtype=torch.long)
    attn = torch.zeros((len(batch), width), dtype=torch.long)
    for i, e in enumerate(batch):
        n = len(e.input_ids)
        ids[i, :n], labels[i, :n], attn[i, :n] = torch.tensor(e.input_ids), torch.tensor(e.labels), 1
    out = {"input_ids": ids, "labels": labels, "attention_mask": attn}
    files = [f for e in batch for f in e.images]
    if files:
        if image_processor is None:
            raise ValueError("trajectories with images need a VL policy's image processor")
        from PIL import Image

        pil = []
        for f in files:
            with Image.open(f) as im:
                pil.append(im.convert("RGB"))
        px = image_processor(images=pil, return_tensors="pt")
        out.update(pixel_values=px["pixel_values"], image_grid_thw=px["image_grid_thw"])
    return out


def batch_indices(n: int, batch_size: int, step: int, seed: int) -> List[int]:
    """The examples of optimizer step ``step``: epochs of seeded permutations, cut in order."""
    per_epoch = max(1, n // batch_size)
    epoch, k = divmod(step, per_epoch)
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed * 1_000_003 + epoch)).tolist()
    return perm[k * batch_size:(k + 1) * batch_size] or perm[:batch_size]


def lr_lambda(cfg: SFTConfig) -> Callable[[int], float]:
    def f(step: int) -> float:
        if step < cfg.warmup_steps:
            return (step + 1) / cfg.warmup_steps
        progress = min(1.0, (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps))
        return cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))
    return f


def policy_loss(model, batch: Dict[str, torch.Tensor]) -> torch.Tensor:
    """Mean cross-entropy over the policy's tokens (labels != -100) of the batch."""
    vision = {k: batch[k] for k in ("pixel_values", "image_grid_thw") if k in batch}
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], **vision).logits[:, :-1].float()
    targets = batch["labels"][:, 1:]
    return torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1), ignore_index=-100)


def load_policy(model_path: str, vision_language: bool):
    from transformers import AutoModelForCausalLM, AutoModelForImageTextToText

    auto = AutoModelForImageTextToText if vision_language else AutoModelForCausalLM
    return auto.from_pretrained(model_path, dtype=torch.float32)


def vision_parameters(model) -> List[torch.nn.Parameter]:
    """The vision tower's parameters (Qwen2.5-VL keeps it under ``visual``)."""
    return [p for name, p in model.named_parameters() if ".visual." in f".{name}" or name.startswith("visual.")]


@dataclass
class SFTResult:
    checkpoint: Path
    first_loss: float
    last_loss: float
    steps_run: int
    resumed_from: int
    seconds: float


def train_sft(model_path: str, data: str | Path, out: str | Path, cfg: SFTConfig, seed: int = 0,
              stop_after: Optional[int] = None, progress: bool = True) -> SFTResult:
    """Train; ``stop_after`` ends the run early after that many steps of this call (tests use it
    to simulate an interruption)."""
    from torch.utils.tensorboard import SummaryWriter
    from tqdm import tqdm
    from transformers import AutoTokenizer

    from rollout.vision import processor_for

    out = Path(out)
    torch.manual_seed(seed)
    tok = AutoTokenizer.from_pretrained(model_path)
    processor = processor_for(model_path)
    model = load_policy(model_path, processor is not None)
    if processor is not None and cfg.freeze_vision:
        for p in vision_parameters(model):
            p.requires_grad_(False)
    model.train()
    examples = examples_from_parquet(data)
    if any(e.images for e in examples) and processor is None:
        raise ValueError(f"{data} holds image trajectories but {model_path} is a text policy")
    image_processor = processor.image_processor if processor is not None else None
    saver = processor if processor is not None else tok  # a VL checkpoint keeps its image processor
    trainable = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(trainable, lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda(cfg))
    ckpts = CheckpointManager(out / "checkpoints", cfg.keep_last)
    start = 0
    source = None if cfg.resume == "disable" else (ckpts.latest() if cfg.resume == "auto" else Path(cfg.resume))
    if source is not None:
        start = ckpts.load(source, model, opt, sched)["step"]
    writer = SummaryWriter(str(out / "tensorboard"), purge_step=start if start else None)
    pad = tok.pad_token_id if tok.pad_token_id is not None else 0
    end = cfg.steps if stop_after is None else min(cfg.steps, start + stop_after)
    losses: List[float] = []
    t0 = time.perf_counter()
    bar = tqdm(range(start, end), desc="sft", unit="step", disable=not progress, initial=start, total=cfg.steps)
    for step in bar:
        batch = collate([examples[i] for i in batch_indices(len(examples), cfg.batch_size, step, seed)], pad,
                        image_processor)
        loss = policy_loss(model, batch)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(trainable, cfg.grad_clip)
        opt.step()
        sched.step()
        losses.append(loss.item())
        if step % cfg.log_every == 0 or step == end - 1:
            writer.add_scalar("sft/loss", losses[-1], step)
            writer.add_scalar("sft/lr", sched.get_last_lr()[0], step)
            writer.add_scalar("sft/grad_norm", float(grad_norm), step)
            bar.set_postfix(loss=f"{losses[-1]:.3f}")
        if (step + 1) % cfg.save_every == 0 or step + 1 == cfg.steps:
            ckpts.save(step + 1, model, opt, sched, saver)
    writer.close()
    if end > start and (end % cfg.save_every) and end != cfg.steps:
        ckpts.save(end, model, opt, sched, saver)  # an early stop still leaves a resumable checkpoint
    latest = ckpts.latest()
    return SFTResult(latest / "model" if latest else Path(model_path), losses[0] if losses else float("nan"),
                     losses[-1] if losses else float("nan"), end - start, start, time.perf_counter() - t0)
