"""How the learner's modules live across ranks.

``replicated``: every rank holds the whole model, AdamW state and gradients; gradients are
summed with one all-reduce per parameter. ``fsdp``: torch's FSDP2 (``fully_shard``) — each
decoder layer is its own unit, the root holds embeddings and head; a rank keeps 1/world of
every parameter, gradient and optimizer state and gathers a layer only while it computes.
Both run on gloo (CPU) and NCCL (GPU) through the same code.

Gradients are *summed* across ranks in both modes (FSDP's default is the mean): the
learner's loss on a rank is already that rank's share of the global token mean.
"""
from __future__ import annotations

from typing import Any, Dict, Optional

import torch

SHARDINGS = ("replicated", "fsdp")


def decoder_layers(model: torch.nn.Module):
    """The transformer blocks HF names in ``_no_split_modules`` (one FSDP unit each)."""
    names = set(getattr(model, "_no_split_modules", None) or [])
    return [m for m in model.modules() if type(m).__name__ in names]


def device_mesh(world_size: int):
    from torch.distributed.device_mesh import init_device_mesh

    return init_device_mesh("cuda" if torch.cuda.is_available() else "cpu", (world_size,))


def fully_shard_model(model: torch.nn.Module, mesh, param_dtype: Optional[torch.dtype] = None) -> torch.nn.Module:
    """Shard ``model`` in place: its decoder layers first, then the root (FSDP2's order)."""
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

    mp = MixedPrecisionPolicy(param_dtype=param_dtype, reduce_dtype=torch.float32) if param_dtype else MixedPrecisionPolicy()
    units = decoder_layers(model) + [model]
    for unit in units:
        fully_shard(unit, mesh=mesh, mp_policy=mp)
    for unit in units:  # each unit keeps its own reduction settings
        unit.set_gradient_divide_factor(1.0)  # sum, not mean: see the module docstring
        unit.set_force_sum_reduction_for_comms(True)  # plain SUM: gloo has no PREMUL_SUM
    return model


def _full(sharded: bool):
    from torch.distributed.checkpoint.state_dict import StateDictOptions

    return StateDictOptions(full_state_dict=sharded, cpu_offload=sharded)


def gather_model_state(module: torch.nn.Module, sharded: bool) -> Dict[str, torch.Tensor]:
    """The full state dict on CPU. Sharded: a collective; rank 0 gets it, the others ``{}``."""
    if not sharded:
        return {k: v.detach().cpu().clone() for k, v in module.state_dict().items()}
    from torch.distributed.checkpoint.state_dict import get_model_state_dict

    return get_model_state_dict(module, options=_full(True))


def gather_optimizer_state(module: torch.nn.Module, opt, sharded: bool) -> Dict[str, Any]:
    """Replicated: ``opt.state_dict()``; sharded: keyed by parameter name, full, on rank 0."""
    if not sharded:
        return opt.state_dict()
    from torch.distributed.checkpoint.state_dict import get_optimizer_state_dict

    return get_optimizer_state_dict(module, opt, options=_full(True))


def load_model_state(module: torch.nn.Module, full: Dict[str, torch.Tensor], sharded: bool) -> None:
    """Every rank passes the full dict; a sharded rank keeps its own slice."""
    if not sharded:
        module.load_state_dict(full)
        return
    from torch.distributed.checkpoint.state_dict import set_model_state_dict

    set_model_state_dict(module, full, options=_full(True))


def load_optimizer_state(module: torch.nn.Module, opt, full: Dict[str, Any], sharded: bool) -> None:
    if not sharded:
        opt.load_state_dict(full)
        return
    from torch.distributed.checkpoint.state_dict import set_optimizer_state_dict

    set_optimizer_state_dict(module, opt, full, options=_full(True))


def sum_gradients(params) -> None:
    """Replicated data parallelism: every rank ends with the sum of all ranks' gradients."""
    import torch.distributed as tdist

    for p in params:
        if p.grad is None:
            p.grad = torch.zeros_like(p)
        tdist.all_reduce(p.grad, op=tdist.ReduceOp.SUM)


def total_norm(norm) -> float:
    """``clip_grad_norm_`` returns a DTensor over sharded parameters."""
    return float(norm.full_tensor() if hasattr(norm, "full_tensor") else norm)
