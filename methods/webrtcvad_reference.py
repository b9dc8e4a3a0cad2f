"""Reference row for the `vad` task: the classic WebRTC VAD (package `webrtcvad-wheels`).

Not a model this benchmark trains or shrinks: it places a widely used GMM-based VAD on the
same test set and metric as the learned models. Its candidate is a torch `nn.Module`
whose forward calls WebRTC through a registered custom operator
(``smallspeech::webrtcvad``), so the runner evaluates, times and stores it like any model.

Score per 10 ms frame: the number of WebRTC aggressiveness modes (0-3) that call the frame
speech, 0..4. WebRTC only gives binary decisions; summing the four operating points gives
a ROC with four thresholds instead of one, so the EER is read between real operating
points rather than interpolated from a single one. Frame j of WebRTC covers samples
[160 j, 160 j + 160); the task's frame i is centred on sample 160 i, so frame i takes
WebRTC frame i (5 ms offset) and the last frame repeats its neighbour.

FLOP/s: the complexity counter cannot see inside a C library, so the stored `flops` is 0
and `uncounted_ops` lists ``smallspeech::webrtcvad``: the flops column means "not
counted", never "free". The row carries ``info["reference"] = True``; reports should
plot it as a reference line (its EER), not as a point on the FLOP/s axis. Latency is
measured as for every model (four passes of WebRTC, one per mode).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from bench.registry import register_method
from methods.base import Candidate, Method, RunContext

HOP = 160


@torch.library.custom_op("smallspeech::webrtcvad", mutates_args=())
def webrtcvad_scores(wave: torch.Tensor, modes: list[int]) -> torch.Tensor:
    """(batch, samples) float waveform at 16 kHz -> (batch, samples // 160 + 1) speech votes."""
    import webrtcvad

    x = (wave.detach().clamp(-1, 1) * 32767).round().to(torch.int16).cpu().numpy()
    n_full = x.shape[1] // HOP
    out = np.zeros((x.shape[0], n_full + 1), np.float32)
    for mode in modes:
        vad = webrtcvad.Vad(int(mode))
        for b in range(x.shape[0]):
            row = x[b]
            out[b, :n_full] += [vad.is_speech(row[j * HOP : (j + 1) * HOP].tobytes(), 16000) for j in range(n_full)]
    out[:, n_full] = out[:, n_full - 1] if n_full else 0.0
    return torch.from_numpy(out).to(wave.device)  # where the input was, as the fake below says


@webrtcvad_scores.register_fake
def _(wave: torch.Tensor, modes: list[int]) -> torch.Tensor:
    return wave.new_empty(wave.shape[0], wave.shape[1] // HOP + 1)


class WebRTCVAD(nn.Module):
    """(batch, samples) -> (batch, frames) WebRTC speech votes (0..len(modes)); no parameters."""

    def __init__(self, modes: tuple[int, ...] = (0, 1, 2, 3)):
        super().__init__()
        self.modes = list(modes)

    def forward(self, wave: torch.Tensor) -> torch.Tensor:
        return torch.ops.smallspeech.webrtcvad(wave, self.modes)


@dataclass(frozen=True)
class WebRTCConfig:
    modes: list[int] = field(default_factory=lambda: [0, 1, 2, 3])  # aggressiveness modes whose votes are summed

    def validate(self) -> None:
        if not self.modes or any(m not in (0, 1, 2, 3) for m in self.modes):
            raise ValueError(f"modes must be a non-empty list of 0..3, got {self.modes}")


@register_method("webrtcvad")
class WebRTCReference(Method):
    description = "reference: the classic WebRTC VAD on the vad test set (not trained; FLOPs not countable)"
    Config = WebRTCConfig
    per_model_family = False  # it uses none of the task's models: one run per seed, whatever the family

    def applies_to(self, task) -> bool:
        return getattr(task, "name", None) == "vad"

    def candidates(self, ctx: RunContext) -> Iterator[Candidate]:
        modes = tuple(self.config.modes)
        yield Candidate(
            model=WebRTCVAD(modes),
            widths={},
            label="webrtcvad",
            info={
                "reference": True,
                "modes": list(modes),
                "flops_note": "WebRTC runs in C outside torch: flops 0 = not counted (see uncounted_ops)",
            },
        )
