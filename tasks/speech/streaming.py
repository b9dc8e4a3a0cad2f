"""The CRNN VAD as a streaming model: audio in chunks, its state carried, the offline scores.

Offline, the CRNN frames the whole recording (centred STFT: 256 reflected samples before
the start), and its two k=5 convolutions zero-pad the feature sequence. The streaming step
keeps exactly what those need from the past:

- `tail`: the last 352 samples (a 512-sample window minus one 160-sample hop);
- `feats`, `conv1`: the last 4 frames entering each convolution (zeros before the start,
  the offline zero padding);
- `hidden`: the GRU state; `frame`: the index of the next feature frame.

Each convolution looks 2 frames ahead, so the scores lag the newest frame by 4 frames
(40 ms). A chunk of `n` hops gives `n` scores; the first call (4 hops) gives none that
count. Scores equal the offline model's except the last 6 frames of a recording, which
offline computes from reflected audio (2 frames) and zero-padded features (4 more).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from tasks.base import Streamer
from tasks.speech.frontend import HOP, N_FFT, SAMPLE_RATE
from tasks.speech.vad_models import CRNN

CONTEXT = 4  # frames each convolution's input keeps from the past (2 per k=5 convolution)


class StreamingCRNN(Streamer):
    sample_rate, hop, lookahead = SAMPLE_RATE, HOP, CONTEXT * HOP
    state_names = ("tail", "feats", "conv1", "hidden", "frame")

    def __init__(self, crnn: CRNN):
        super().__init__()
        self.crnn = crnn
        self.train(crnn.training)

    def start(self, wave: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
        """State from the first 96 samples (with the 256 reflected before them, as offline)."""
        m, pad, keep = self.crnn, N_FFT // 2, N_FFT - HOP
        if wave.shape[-1] <= pad:
            raise ValueError(f"streaming needs more than {pad} samples, got {wave.shape[-1]}")
        padded = torch.cat([wave[:, 1 : pad + 1].flip(-1), wave], dim=1)
        b, conv1 = wave.shape[0], m.conv[0].out_channels
        state = [
            padded[:, :keep],
            wave.new_zeros(b, m.conv[0].in_channels, CONTEXT),
            wave.new_zeros(b, conv1, CONTEXT),
            wave.new_zeros(1, b, m.gru.hidden_size),
            torch.zeros(1, dtype=torch.long, device=wave.device),
        ]
        return state, padded[:, keep:]

    def forward(self, chunk, tail, feats, conv1, hidden, frame):
        m = self.crnn
        audio = torch.cat([tail, chunk], dim=1)
        f = m.input.mask(m.input.norm(torch.log(m.input.logmel.energies(audio, center=False) + 1e-6)))
        n = f.shape[-1]
        x1 = torch.cat([feats, f], dim=2)
        c1, bn1, relu1, mask1, c2, bn2, relu2, mask2 = m.conv
        g = mask1(relu1(bn1(F.conv1d(x1, c1.weight, c1.bias))))
        g = g * ((frame - CONTEXT // 2 + torch.arange(n, device=g.device)) >= 0).to(
            g.dtype
        )  # before the start: offline's zero padding
        x2 = torch.cat([conv1, g], dim=2)
        h = mask2(relu2(bn2(F.conv1d(x2, c2.weight, c2.bias)))).transpose(1, 2)
        out, new_hidden = nn.GRU.forward(m.gru, h, hidden)
        # The first call's frames all lie before the start: the GRU must not have seen them.
        new_hidden = torch.where(frame >= CONTEXT, new_hidden, hidden)
        scores = m.head(m.gru.mask(out)).squeeze(-1)
        return scores, audio[:, n * HOP :], x1[:, :, -CONTEXT:], x2[:, :, -CONTEXT:], new_hidden, frame + n
