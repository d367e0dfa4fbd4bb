"""Table 3: detection and localization with a DRAEM-style discriminative UNet per category.

Trained on ``train/good`` normals (empty masks) plus generated anomalies (masks binarized
at 0.5) with the focal loss (gamma 2); the anomaly map is the softmax of the anomaly
channel; the image score is the max of its 21x21 average-pooled map.

Where we depart from DRAEM and the published scripts:
- DRAEM's discriminative net reads the image concatenated with a reconstruction from its
  reconstructive subnet; with generated anomalies there is nothing to reconstruct, so the
  UNet reads the image alone (as the anomaly-generation papers' "simple UNet" does).
- The epoch is selected on a validation split carved from the training data (normals and
  generated), by pixel AP. Published scripts select on the test set; those numbers are
  optional here and labelled ``test-selected``, chosen by the published sum (I-AUROC +
  P-AUROC + P-AP + PRO).
"""
from __future__ import annotations

import copy
from typing import Dict, List, Optional, Sequence

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from benchmarks.metrics import au_pro, auroc, average_precision, f1_max


def _block(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
                         nn.Conv2d(cout, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class DiscriminativeUNet(nn.Module):
    """Encoder-decoder with skips; 2-channel output (normal, anomaly)."""

    def __init__(self, base: int = 64, depth: int = 4, in_channels: int = 3):
        super().__init__()
        chans = [base * min(2 ** i, 8) for i in range(depth + 1)]
        self.down = nn.ModuleList([_block(in_channels, chans[0])] +
                                  [_block(chans[i], chans[i + 1]) for i in range(depth)])
        self.up = nn.ModuleList([nn.ConvTranspose2d(chans[i + 1], chans[i], 2, stride=2) for i in reversed(range(depth))])
        self.dec = nn.ModuleList([_block(2 * chans[i], chans[i]) for i in reversed(range(depth))])
        self.head = nn.Conv2d(chans[0], 2, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = []
        for i, block in enumerate(self.down):
            x = block(x if i == 0 else F.max_pool2d(x, 2))
            skips.append(x)
        skips.pop()
        for up, dec in zip(self.up, self.dec):
            x = dec(torch.cat([up(x), skips.pop()], dim=1))
        return self.head(x)


def focal_loss(logits: torch.Tensor, target: torch.Tensor, gamma: float = 2.0) -> torch.Tensor:
    logp = F.log_softmax(logits, dim=1).gather(1, target.long().unsqueeze(1)).squeeze(1)
    return (-(1 - logp.exp()) ** gamma * logp).mean()


def _tensor(images: List[np.ndarray]) -> torch.Tensor:
    return torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float() / 255.0


@torch.no_grad()
def anomaly_maps(model: nn.Module, images: List[np.ndarray], batch_size: int = 16) -> np.ndarray:
    model.eval()
    out = [F.softmax(model(_tensor(images[i: i + batch_size])), dim=1)[:, 1] for i in range(0, len(images), batch_size)]
    return torch.cat(out).numpy()


def image_scores(maps: np.ndarray, kernel: int = 21) -> np.ndarray:
    pooled = F.avg_pool2d(torch.from_numpy(maps)[:, None], kernel, stride=1, padding=kernel // 2)
    return pooled.flatten(1).max(dim=1).values.numpy()


# the published scripts pick the test-selected epoch by this sum
TEST_SELECTION = ("image_auroc", "pixel_auroc", "pixel_ap", "au_pro")


def evaluate(maps: np.ndarray, masks: List[np.ndarray], anomalous: Sequence[bool],
             pro_limit: float = 0.3) -> Dict[str, float]:
    """``anomalous``: each image's label from its folder (``defect != "good"``), not from its
    resized mask — a small defect's mask can vanish at 256 px and the image stays anomalous."""
    gt = np.stack(masks).astype(bool)
    labels = np.asarray(anomalous, bool)
    if labels.shape != (len(gt),):
        raise ValueError(f"{len(labels)} image labels for {len(gt)} masks")
    scores = image_scores(maps)
    return {"image_auroc": auroc(labels, scores), "image_ap": average_precision(labels, scores),
            "image_f1_max": f1_max(labels, scores), "pixel_auroc": auroc(gt, maps),
            "pixel_ap": average_precision(gt, maps), "pixel_f1_max": f1_max(gt, maps),
            "au_pro": au_pro(list(gt), list(maps), pro_limit)}


def split_validation(n: int, fraction: float, rng: np.random.Generator) -> np.ndarray:
    """Boolean mask of the validation items (at least one when n > 1)."""
    k = min(max(1, int(round(n * fraction))), n - 1) if n > 1 else 0
    val = np.zeros(n, bool)
    val[rng.choice(n, k, replace=False)] = True
    return val


def detect_category(normals: List[np.ndarray], generated, test_images: List[np.ndarray],
                    test_masks: List[np.ndarray], test_anomalous: Sequence[bool], epochs: int, lr: float, batch_size: int, base_channels: int,
                    val_fraction: float, seed: int, test_selected: bool = False, progress=None) -> Dict[str, object]:
    rng = np.random.default_rng(seed)
    torch.manual_seed(seed)
    gen_images = [im for d in generated.defects for im in generated.images[d]]
    gen_masks = [m for d in generated.defects for m in generated.masks[d]]
    size = normals[0].shape[0]
    zeros = np.zeros((size, size), np.uint8)
    images, masks = normals + gen_images, [zeros] * len(normals) + gen_masks
    is_val = np.r_[split_validation(len(normals), val_fraction, rng), split_validation(len(gen_images), val_fraction, rng)]
    train_idx, val_idx = np.flatnonzero(~is_val), np.flatnonzero(is_val)
    x_train = _tensor([images[i] for i in train_idx])
    y_train = torch.from_numpy(np.stack([masks[i] for i in train_idx]))
    model = DiscriminativeUNet(base_channels)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    g = torch.Generator().manual_seed(seed)
    best = {"val_pixel_ap": -1.0}
    best_test: Optional[Dict[str, float]] = None
    for epoch in range(epochs):
        model.train()
        losses = []
        for idx in torch.randperm(len(train_idx), generator=g).split(batch_size):
            x, y = x_train[idx], y_train[idx]
            flip = torch.rand(len(idx), generator=g) < 0.5
            x = torch.where(flip.view(-1, 1, 1, 1), x.flip(-1), x)
            y = torch.where(flip.view(-1, 1, 1), y.flip(-1), y)
            loss = focal_loss(model(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(loss.item())
        val_maps = anomaly_maps(model, [images[i] for i in val_idx])
        val_gt = np.stack([masks[i] for i in val_idx]).astype(bool)
        val_ap = average_precision(val_gt, val_maps) if val_gt.any() and not val_gt.all() else 0.0
        if val_ap > best["val_pixel_ap"]:
            best = {"val_pixel_ap": val_ap, "epoch": epoch + 1, "state": copy.deepcopy(model.state_dict())}
        if test_selected:
            res = evaluate(anomaly_maps(model, test_images), test_masks, test_anomalous)
            if best_test is None or sum(res[k] for k in TEST_SELECTION) > sum(best_test[k] for k in TEST_SELECTION):
                best_test = {**res, "epoch": epoch + 1}
        if progress is not None:
            progress.set_postfix(loss=f"{np.mean(losses):.4f}", val_pixel_ap=f"{val_ap:.3f}")
            progress.update(1)
    model.load_state_dict(best["state"])
    result = {**evaluate(anomaly_maps(model, test_images), test_masks, test_anomalous), "selected_epoch": best["epoch"],
              "val_pixel_ap": best["val_pixel_ap"], "n_train": len(train_idx), "n_val": len(val_idx)}
    if best_test is not None:
        result["test_selected"] = best_test
    return result
