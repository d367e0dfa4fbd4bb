"""Inception Score with torch-fidelity's Inception-v3 (the TF-ported weights) and its
``isc_features_to_metric`` (10 splits, its shuffle seed).

Weights come from a local path or torch-fidelity's cache; nothing is downloaded. Without
them a random-init network goes through the very same code (``random_inception_weights``),
and the result is labelled as not comparable.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import List, Optional, Tuple

import numpy as np
import torch

WEIGHTS_FILE = "weights-inception-2015-12-05-6726825d.pth"  # torch-fidelity's cache name


def cached_weights() -> Optional[Path]:
    home = Path(os.environ.get("TORCH_HOME", Path.home() / ".cache" / "torch"))
    p = home / "hub" / "checkpoints" / WEIGHTS_FILE
    return p if p.is_file() else None


def random_inception_weights(path: Path, seed: int = 0) -> Path:
    """A randomly initialized state dict of torch-fidelity's Inception, saved to ``path``."""
    from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

    class _Unloaded(FeatureExtractorInceptionV3):
        def load_state_dict(self, state_dict, strict=True, assign=False):  # keep the random init
            return None

    path.parent.mkdir(parents=True, exist_ok=True)
    empty = path.with_suffix(".empty.pt")
    torch.save({}, empty)
    torch.manual_seed(seed)
    state = _Unloaded("inception-v3-compat", ["logits_unbiased"], feature_extractor_weights_path=str(empty)).state_dict()
    torch.save(state, path)
    empty.unlink()
    return path


def load_inception(weights: Optional[str], scratch: Path) -> Tuple[torch.nn.Module, str]:
    """(extractor, label). ``weights``: a local file; else torch-fidelity's cache; else random init."""
    from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

    path, label = (Path(weights), "Inception-v3 (torch-fidelity weights)") if weights else (cached_weights(), "")
    if path is None:
        path = random_inception_weights(scratch / "inception_random.pt")
        label = "random-init Inception (no weights found): IS not comparable to published numbers"
    label = label or "Inception-v3 (torch-fidelity weights)"
    return FeatureExtractorInceptionV3("inception-v3-compat", ["logits_unbiased"],
                                       feature_extractor_weights_path=str(path)), label


@torch.no_grad()
def inception_score(images: List[np.ndarray], extractor: torch.nn.Module, splits: int = 10,
                    batch_size: int = 32) -> float:
    """IS of a folder's images (HxWx3 uint8). Fewer images than splits: one split per image."""
    from torch_fidelity.metric_isc import KEY_METRIC_ISC_MEAN, isc_features_to_metric

    if not images:
        raise ValueError("inception_score needs at least one image")
    logits = []
    for i in range(0, len(images), batch_size):
        x = torch.from_numpy(np.stack(images[i: i + batch_size])).permute(0, 3, 1, 2).contiguous()
        logits.append(extractor(x)[0].float())
    feats = torch.cat(logits)
    return float(isc_features_to_metric(feats, splits=min(splits, len(images)))[KEY_METRIC_ISC_MEAN])
