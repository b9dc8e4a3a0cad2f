"""The two VAD model families: a CRNN and a small transformer, both on a log-mel front end.

Input (batch, samples) at 16 kHz; output (batch, frames) speech logits, one per 10 ms frame
(`samples // 160 + 1`). Each width slot is marked with a `WidthMask` where its features are
read, and every slot-dependent parameter is laid out as contiguous groups of that slot's
features (so a consolidation keeps the leading features of each group).

Mel bands are a slot (`n_mels`): zeroing band i is removing its row of the filterbank.
The bands are standardised per band (BatchNorm1d, a per-feature affine map in inference)
*before* the mask, so a zeroed band reads as absent, not as "average energy".
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

from tasks.base import WidthMask
from tasks.speech.frontend import LogMel


class MelInput(nn.Module):
    """Waveform -> standardised log-mel (batch, n_mels, frames), masked as slot `n_mels`."""

    def __init__(self, n_mels: int):
        super().__init__()
        self.logmel = LogMel(n_mels)
        self.norm = nn.BatchNorm1d(n_mels)
        self.mask = WidthMask("n_mels", dim=1)

    def forward(self, wave: torch.Tensor) -> torch.Tensor:
        return self.mask(self.norm(self.logmel(wave)))


class MaskedGRU(nn.GRU):
    """A one-layer, batch-first `nn.GRU` (weights in 3 gate groups r, z, n of the hidden slot)
    whose output sequence carries the slot's `WidthMask`.

    A GRU reads its own hidden state, so masking its output alone would leave "removed"
    units alive inside the recurrence; width-learning methods therefore also zero those
    units' rows and columns in the GRU's weights (`methods.dynamic.layout.mask_weights`),
    which keeps them at exactly zero. That keeps the fused GRU: a Python step loop that
    masked each hidden state was 3x slower per training step on 2 CPU cores.
    """

    def __init__(self, input_size: int, hidden_size: int, slot: str = "gru"):
        super().__init__(input_size, hidden_size, batch_first=True)
        self.mask = WidthMask(slot, dim=-1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        return self.mask(super().forward(x)[0])


class CRNN(nn.Module):
    """log-mel -> 2 x (Conv1d over time, k=5, BatchNorm, ReLU) -> GRU -> Linear-ReLU -> Linear.

    Slots: `n_mels` (mel bands), `conv1`, `conv2` (channels), `gru` (hidden units; the GRU's
    weights are 3 gate groups of it; see `MaskedGRU` for removing units inside the recurrence),
    `head` (hidden units of the classifier). The GRU is
    unidirectional and the convolutions look 2 frames (20 ms) ahead: a streaming VAD.
    """

    def __init__(self, n_mels: int, conv1: int, conv2: int, gru: int, head: int):
        super().__init__()
        self.input = MelInput(n_mels)
        self.conv = nn.Sequential(
            nn.Conv1d(n_mels, conv1, 5, padding=2),
            nn.BatchNorm1d(conv1),
            nn.ReLU(),
            WidthMask("conv1", dim=1),
            nn.Conv1d(conv1, conv2, 5, padding=2),
            nn.BatchNorm1d(conv2),
            nn.ReLU(),
            WidthMask("conv2", dim=1),
        )
        self.gru = MaskedGRU(conv2, gru)
        self.head = nn.Sequential(nn.Linear(gru, head), nn.ReLU(), WidthMask("head", dim=-1), nn.Linear(head, 1))

    def forward(self, wave: torch.Tensor) -> torch.Tensor:
        x = self.conv(self.input(wave)).transpose(1, 2)  # (batch, frames, conv2)
        return self.head(self.gru(x)).squeeze(-1)


class FeatureNorm(nn.BatchNorm1d):
    """BatchNorm over the last (feature) axis of (batch, frames, features).

    The transformer uses it instead of LayerNorm: LayerNorm's mean and variance mix all
    features, so zeroing a feature would not be the same as removing it; a per-feature norm
    (an affine map in inference) keeps the width masks exact.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x.reshape(-1, x.shape[-1])).reshape(x.shape)


class EncoderLayer(nn.Module):
    """Pre-norm transformer layer: x + MHSA(norm x), then x + FFN(norm x).

    Each sub-block output is masked with the model-width slot `n_mels` (it is added to the
    residual stream); q, k, v are masked per head with slot `head_dim`; the FFN's hidden
    units with `ffn`. The attention scale is fixed at 1/sqrt(full head_dim), so narrowing
    heads does not rescale the logits of the features kept.
    """

    def __init__(self, d: int, heads: int, head_dim: int, ffn: int, scale: float):
        super().__init__()
        self.heads, self.head_dim, self.scale = heads, head_dim, scale
        self.norm1, self.norm1_mask = FeatureNorm(d), WidthMask("n_mels", dim=-1)
        self.q, self.k, self.v = (nn.Linear(d, heads * head_dim) for _ in range(3))
        self.q_mask, self.k_mask, self.v_mask = (WidthMask("head_dim", dim=-1) for _ in range(3))
        self.out = nn.Linear(heads * head_dim, d)
        self.attn_mask = WidthMask("n_mels", dim=-1)
        self.norm2, self.norm2_mask = FeatureNorm(d), WidthMask("n_mels", dim=-1)
        self.ffn = nn.Sequential(
            nn.Linear(d, ffn), nn.ReLU(), WidthMask("ffn", dim=-1), nn.Linear(ffn, d), WidthMask("n_mels", dim=-1)
        )

    def _split(self, x: torch.Tensor) -> torch.Tensor:  # (B, T, H*hd) -> (B, H, T, hd)
        return x.unflatten(-1, (self.heads, self.head_dim)).transpose(1, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.norm1_mask(self.norm1(x))
        q, k, v = (
            self.q_mask(self._split(self.q(h))),
            self.k_mask(self._split(self.k(h))),
            self.v_mask(self._split(self.v(h))),
        )
        a = F.scaled_dot_product_attention(q, k, v, scale=self.scale).transpose(1, 2).flatten(2)
        x = x + self.attn_mask(self.out(a))
        return x + self.ffn(self.norm2_mask(self.norm2(x)))


class TransformerVAD(nn.Module):
    """log-mel (d bands) -> depthwise temporal conv (position) -> layers -> norm -> Linear.

    The model width *is* the number of mel bands (slot `n_mels`, as in the paper): the
    standardised log-mel frame is the first residual stream. Heads are fixed (`heads`);
    per-head width (`head_dim`) and FFN width (`ffn`) are slots.
    """

    def __init__(self, d: int, heads: int, head_dim: int, ffn: int, layers: int, full_head_dim: int):
        super().__init__()
        self.input = MelInput(d)
        self.pos = nn.Conv1d(d, d, 5, padding=2, groups=d)  # relative position: local context per band
        self.pos_mask = WidthMask("n_mels", dim=1)
        scale = 1.0 / math.sqrt(full_head_dim)
        self.layers = nn.ModuleList(EncoderLayer(d, heads, head_dim, ffn, scale) for _ in range(layers))
        self.norm, self.norm_mask = FeatureNorm(d), WidthMask("n_mels", dim=-1)
        self.classifier = nn.Linear(d, 1)

    def forward(self, wave: torch.Tensor) -> torch.Tensor:
        x = self.input(wave)
        x = (x + self.pos_mask(self.pos(x))).transpose(1, 2)  # (batch, frames, d)
        for layer in self.layers:
            x = layer(x)
        return self.classifier(self.norm_mask(self.norm(x))).squeeze(-1)
