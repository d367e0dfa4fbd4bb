"""IC-LPIPS (intra-cluster LPIPS) with batched pairwise LPIPS-VGG.

Batched pairwise LPIPS: LPIPS is a sum over layers of a non-trainable-at-eval 1x1 linear
layer applied to the squared difference of unit-normalized features, averaged over space.
Linear and averaged, so for images i, j and layer l with weights w:

    d_l(i, j) = (s_i + s_j - 2 <w * F_i, F_j>) / HW,   s_i = <w * F_i, F_i>

Features are computed once per image (N backbone passes instead of one pair of passes
per pair) and every pair comes out of one matrix product per layer. Checked equal to the
``lpips`` package's per-pair call in the tests and in ``bench mvtec``.

Protocol (design.md §6): generated images go to the nearest (LPIPS) of the first
⌊N/3⌋ real anomalies of their type; at most 50 random members per cluster (seeded); mean
pairwise LPIPS per cluster; clusters with fewer than 2 members dropped in one variant and
counted as 0 in the other.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence

import numpy as np
import torch

VGG_FILE = "vgg16-397923af.pth"  # torchvision's cache name; lpips' own linear weights ship in its wheel


def vgg_cached() -> bool:
    home = Path(os.environ.get("TORCH_HOME", Path.home() / ".cache" / "torch"))
    return (home / "hub" / "checkpoints" / VGG_FILE).is_file()


class BatchedLPIPS:
    def __init__(self, batch_size: int = 8, seed: int = 0):
        import lpips

        pretrained_backbone = vgg_cached()
        with torch.random.fork_rng():  # a random backbone (no VGG weights) is the same in every run
            torch.manual_seed(seed)
            self.model = lpips.LPIPS(net="vgg", pnet_rand=not pretrained_backbone, verbose=False).eval()
        self.label = ("LPIPS-VGG" if pretrained_backbone else
                      "LPIPS with a random VGG backbone (no torchvision VGG16 weights in TORCH_HOME): not comparable")
        self.weights = [lin.model[-1].weight.detach().double().flatten() for lin in self.model.lins]
        self.batch_size = batch_size

    @staticmethod
    def to_tensor(images: Sequence[np.ndarray]) -> torch.Tensor:
        x = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float()
        return x / 127.5 - 1.0

    @torch.no_grad()
    def features(self, images: Sequence[np.ndarray]) -> List[torch.Tensor]:
        """Per layer: (N, C, HW) unit-normalized features, float64."""
        import lpips

        per_layer: List[List[torch.Tensor]] = [[] for _ in self.weights]
        for i in range(0, len(images), self.batch_size):
            outs = self.model.net.forward(self.model.scaling_layer(self.to_tensor(images[i: i + self.batch_size])))
            for layer, out in enumerate(outs):
                f = lpips.normalize_tensor(out).double()
                per_layer[layer].append(f.flatten(2))
        return [torch.cat(chunks) for chunks in per_layer]

    def pairwise(self, a: Sequence[np.ndarray], b: Optional[Sequence[np.ndarray]] = None) -> np.ndarray:
        """(len(a), len(b)) LPIPS distances; ``b`` omitted: a against itself."""
        fa = self.features(a)
        fb = fa if b is None else self.features(b)
        total = torch.zeros(fa[0].shape[0], fb[0].shape[0], dtype=torch.float64)
        for w, xa, xb in zip(self.weights, fa, fb):
            wa = xa * w[None, :, None]
            sa = (wa * xa).sum(dim=(1, 2))
            sb = ((xb * w[None, :, None]) * xb).sum(dim=(1, 2))
            cross = wa.flatten(1) @ xb.flatten(1).T
            total += (sa[:, None] + sb[None, :] - 2 * cross) / xa.shape[-1]
        return total.clamp_min(0).numpy()

    @torch.no_grad()
    def pair_loop(self, a: Sequence[np.ndarray], b: Optional[Sequence[np.ndarray]] = None) -> np.ndarray:
        """The reference: the ``lpips`` package's forward, one pair at a time (within ``a``:
        each unordered pair once, as a per-pair script would)."""
        same = b is None
        b = a if same else b
        out = np.zeros((len(a), len(b)))
        for i, x in enumerate(a):
            for j in range(i + 1 if same else 0, len(b)):
                out[i, j] = float(self.model(self.to_tensor([x]), self.to_tensor([b[j]])))
                if same:
                    out[j, i] = out[i, j]
        return out


def ic_lpips(generated: Sequence, centres: Sequence, pairwise: Callable[..., np.ndarray], max_members: int = 50,
             seed: int = 0) -> Dict[str, object]:
    """IC-LPIPS of one defect type. ``pairwise(a, b)`` gives the distance matrix (``b`` None:
    within ``a``); ``generated``/``centres`` are sequences it accepts (images, or a stub's items)."""
    if len(centres) == 0 or len(generated) == 0:
        raise ValueError("IC-LPIPS needs at least one real centre and one generated image")
    assign = np.asarray(pairwise(generated, centres)).argmin(axis=1)
    rng = np.random.default_rng(seed)
    per_cluster: List[Optional[float]] = []
    sizes = []
    for c in range(len(centres)):
        members = np.flatnonzero(assign == c)
        sizes.append(int(len(members)))
        if len(members) > max_members:
            members = np.sort(rng.choice(members, max_members, replace=False))
        if len(members) < 2:
            per_cluster.append(None)
            continue
        d = np.asarray(pairwise([generated[i] for i in members]))
        iu = np.triu_indices(len(members), k=1)
        per_cluster.append(float(d[iu].mean()))
    kept = [v for v in per_cluster if v is not None]
    return {"dropped": float(np.mean(kept)) if kept else float("nan"),
            "zero": float(np.sum(kept) / len(per_cluster)), "cluster_sizes": sizes, "per_cluster": per_cluster}
