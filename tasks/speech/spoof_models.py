"""The anti-spoofing model: a ResNet34-shaped network (3, 4, 6, 3 basic blocks) on a spectral front end.

Input (batch, samples) at 16 kHz; output (batch,) bona fide logits. The front end
(`LFCC` by default: 20 cepstra with deltas, 10 ms hop; or `LowBandSpectrogram`: 0-500 Hz
at 15.6 Hz resolution, 16 ms hop) is
normalised per band and treated as a one-channel image; the stem (stride 2 in both axes)
and each stage's blocks have the stage's channel width, a slot `stage1..stage4`. Every
block output of a stage (its residual stream) and every block's inner activation are
masked with the stage's slot, so one width governs the whole stage, as in the paper's
"channel widths of the residual stages". The masks apply the ReLUs before them
(`relu=True`), so that noise injection does both in one pass. Global average pooling over
time and frequency, then a Linear.

Two choices for training in a few hundred steps: each block's last BatchNorm starts at
zero scale, so every block starts as the identity (Goyal et al., 2017); without it the
34-layer net often sits at chance for most of a short schedule. And the network runs in
channels-last memory layout, about 1.5x faster on CPU for the 8-channel first stage.
"""

from __future__ import annotations

import torch
from torch import nn

from tasks.base import WidthMask
from tasks.speech.frontend import LFCC, LowBandSpectrogram

BLOCKS = (3, 4, 6, 3)  # ResNet34
RESNET34_WIDTHS = (64, 128, 256, 512)
FRONT_ENDS = ("lfcc", "lowband")


class BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int, slot: str):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.mask1 = WidthMask(slot, dim=1, relu=True)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        nn.init.zeros_(self.bn2.weight)  # the block starts as its shortcut
        self.shortcut = (
            nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))
            if stride != 1 or cin != cout
            else nn.Identity()
        )
        self.mask2 = WidthMask(slot, dim=1, relu=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.mask1(self.bn1(self.conv1(x)))  # the masks apply the ReLUs
        return self.mask2(self.bn2(self.conv2(h)) + self.shortcut(x))


def front_end(name: str, max_hz: float = 500.0, n_ceps: int = 20) -> nn.Module:
    """The spectral front end `name` (one of `FRONT_ENDS`), output (batch, bands, frames)."""
    if name == "lowband":
        return LowBandSpectrogram(max_hz)
    if name == "lfcc":
        return LFCC(n_ceps=n_ceps)
    raise ValueError(f"front end must be one of {', '.join(FRONT_ENDS)}, got {name!r}")


class ResNetSpoof(nn.Module):
    """Front end -> per-band norm -> stem -> 4 stages -> average pool -> Linear(., 1)."""

    def __init__(self, widths: tuple[int, int, int, int], front: str = "lfcc", max_hz: float = 500.0, n_ceps: int = 20):
        super().__init__()
        self.front = front_end(front, max_hz, n_ceps)
        with torch.no_grad():
            bands = self.front(torch.zeros(1, 4096)).shape[1]
        self.norm = nn.BatchNorm1d(bands)
        self.stem = nn.Sequential(
            nn.Conv2d(1, widths[0], 3, 2, 1, bias=False),
            nn.BatchNorm2d(widths[0]),
            WidthMask("stage1", dim=1, relu=True),
        )
        stages, cin = [], widths[0]
        for i, (n, w) in enumerate(zip(BLOCKS, widths)):
            stride = 1 if i == 0 else 2
            stages.append(
                nn.Sequential(
                    *(BasicBlock(cin if j == 0 else w, w, stride if j == 0 else 1, f"stage{i + 1}") for j in range(n))
                )
            )
            cin = w
        self.stages = nn.Sequential(*stages)
        self.classifier = nn.Linear(widths[-1], 1)
        self.to(memory_format=torch.channels_last)  # conv weights; the input is converted in forward

    def forward(self, wave: torch.Tensor) -> torch.Tensor:
        x = self.norm(self.front(wave)).unsqueeze(1)  # (batch, 1, bands, frames)
        x = self.stages(self.stem(x.contiguous(memory_format=torch.channels_last)))
        return self.classifier(x.mean(dim=(2, 3))).squeeze(-1)
