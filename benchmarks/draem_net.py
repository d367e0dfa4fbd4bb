"""The detector the published localization script trains: DRAEM's discriminative
sub-network and its focal loss, written here from their description.

- Encoder: six blocks of two 3×3 conv + BatchNorm + ReLU, widths b, 2b, 4b, 8b, 8b, 8b,
  with a 2×2 max-pool before each of the last five (five poolings).
- Decoder: at each level a bilinear ×2 upsampling, a 3×3 conv + BN + ReLU, the skip of the
  encoder block at that size concatenated, and a block of two 3×3 conv + BN + ReLU; widths
  8b, 4b, 2b, b, b. A 3×3 conv head gives 2 channels (normal, anomaly).
- Initialisation: conv weights N(0, 0.02), BatchNorm weights N(1, 0.02) and biases 0.
- Focal loss on the softmax, γ = 2, the one-hot target clamped to [s, 1 − s] with label
  smoothing s = 1e-5, and s added to p_t before the log.

DRAEM itself feeds the network the image concatenated with its reconstruction (6 channels);
the published localization script, and we, feed the image alone (3 channels): with
generated anomalies there is nothing to reconstruct.
"""
from __future__ import annotations

from typing import List

import torch
import torch.nn as nn
import torch.nn.functional as F

POOLINGS = 5


def conv_block(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
                         nn.Conv2d(cout, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


def up_conv(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Upsample(scale_factor=2, mode="bilinear", align_corners=True),
                         nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class DiscriminativeNet(nn.Module):
    def __init__(self, base: int = 64, in_channels: int = 3, out_channels: int = 2):
        super().__init__()
        enc: List[int] = [base, 2 * base, 4 * base, 8 * base, 8 * base, 8 * base]
        dec: List[int] = [8 * base, 4 * base, 2 * base, base, base]
        self.encoder = nn.ModuleList([conv_block(in_channels, enc[0])] +
                                     [conv_block(enc[i], enc[i + 1]) for i in range(POOLINGS)])
        self.ups, self.blocks = nn.ModuleList(), nn.ModuleList()
        below = enc[-1]
        for level, width in enumerate(dec):
            skip = enc[POOLINGS - 1 - level]
            self.ups.append(up_conv(below, width))
            self.blocks.append(conv_block(width + skip, width))
            below = width
        self.head = nn.Conv2d(below, out_channels, 3, padding=1)
        self.apply(init_weights)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] % 2 ** POOLINGS or x.shape[-2] % 2 ** POOLINGS:
            raise ValueError(f"image sides must be multiples of {2 ** POOLINGS}, got {tuple(x.shape[-2:])}")
        skips = []
        for i, block in enumerate(self.encoder):
            x = block(x if i == 0 else F.max_pool2d(x, 2))
            skips.append(x)
        skips.pop()
        for up, block in zip(self.ups, self.blocks):
            x = block(torch.cat([up(x), skips.pop()], dim=1))
        return self.head(x)


def init_weights(m: nn.Module) -> None:
    if isinstance(m, nn.Conv2d):
        nn.init.normal_(m.weight, 0.0, 0.02)
    elif isinstance(m, nn.BatchNorm2d):
        nn.init.normal_(m.weight, 1.0, 0.02)
        nn.init.zeros_(m.bias)


def focal_loss(logits: torch.Tensor, target: torch.Tensor, gamma: float = 2.0, smooth: float = 1e-5) -> torch.Tensor:
    """``logits`` N×C×H×W, ``target`` N×H×W class ids; mean over pixels."""
    p = F.softmax(logits, dim=1)
    classes = logits.shape[1]
    one_hot = F.one_hot(target.long(), classes).permute(0, 3, 1, 2).to(p.dtype)
    if smooth:
        one_hot = one_hot.clamp(smooth / (classes - 1), 1.0 - smooth)
    pt = (one_hot * p).sum(dim=1) + smooth
    return (-(1 - pt) ** gamma * pt.log()).mean()
