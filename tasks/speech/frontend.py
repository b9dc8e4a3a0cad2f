"""Spectral front ends in plain torch (`torch.stft`; no torchaudio), so the complexity
counter sees and counts them as part of each model.

`LogMel` and `LFCC` use a 25 ms Hann window (400 samples) and a 10 ms hop (160) at 16 kHz
with ``center=True``: `n // 160 + 1` frames for `n` samples, the framing of
`mixing.frame_labels`. `LowBandSpectrogram` (anti-spoofing) has its own, longer framing.
The filterbank / DCT matrices are persistent buffers, so a model rebuilt from a state dict
(e.g. a consolidated one keeping the first mel bands) uses exactly the stored filters.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from tasks.base import FeatureBank

SAMPLE_RATE, N_FFT, WIN, HOP = 16000, 512, 400, 160


def _hz_to_mel(f):
    return 2595.0 * np.log10(1.0 + np.asarray(f) / 700.0)


def _mel_to_hz(m):
    return 700.0 * (10 ** (np.asarray(m) / 2595.0) - 1.0)


def triangular_filters(edges_hz: np.ndarray, n_fft: int = N_FFT, sr: int = SAMPLE_RATE) -> np.ndarray:
    """(len(edges) - 2, n_fft // 2 + 1) triangles with the given lower/centre/upper edges."""
    freqs = np.linspace(0, sr / 2, n_fft // 2 + 1)
    lo, mid, hi = edges_hz[:-2, None], edges_hz[1:-1, None], edges_hz[2:, None]
    up = (freqs - lo) / np.maximum(mid - lo, 1e-9)
    down = (hi - freqs) / np.maximum(hi - mid, 1e-9)
    return np.clip(np.minimum(up, down), 0, None).astype(np.float32)


def mel_filters(n_mels: int, f_min: float = 20.0, f_max: float = 8000.0) -> np.ndarray:
    """HTK-style mel triangles, (n_mels, 257), each normalised to unit area."""
    edges = _mel_to_hz(np.linspace(_hz_to_mel(f_min), _hz_to_mel(f_max), n_mels + 2))
    fb = triangular_filters(edges)
    return fb / np.maximum(fb.sum(1, keepdims=True), 1e-9)


def spread_order(n: int) -> list[int]:
    """The band indices 0..n-1 reordered so that every prefix spreads over the whole range:
    by the van der Corput sequence (0, 1/2, 1/4, 3/4, ...) of each band's position. A model
    that keeps its first K bands then keeps K bands from the lowest to the highest
    frequency, not the lowest K."""

    def radical_inverse(i: int) -> float:
        out, scale = 0.0, 0.5
        while i:
            out, i, scale = out + scale * (i & 1), i >> 1, scale / 2
        return out

    order: list[int] = []
    for i in range(4 * n):  # enough draws to meet every band at least once
        band = min(n - 1, int(radical_inverse(i) * n))
        if band not in order:
            order.append(band)
    return order + [b for b in range(n) if b not in order]


def spread_bands(logmel: LogMel) -> None:
    """Reorder `logmel`'s filterbank rows by `spread_order` (in place)."""
    with torch.no_grad():
        logmel.filters.copy_(logmel.filters[spread_order(logmel.filters.shape[0])])


def power(spec: torch.Tensor) -> torch.Tensor:
    """|z|^2 of a complex STFT as re^2 + im^2: 4x faster on CPU than abs().pow(2)."""
    return spec.real.square() + spec.imag.square()


def stft_power(
    wave: torch.Tensor,
    n_fft: int,
    hop: int,
    window: torch.Tensor,
    bins: int | list[int] | None = None,
    center: bool = True,
) -> torch.Tensor:
    """|STFT|^2 of the first `bins` bins, or of the bins listed (all if None): (batch, bins, frames).

    While exporting to ONNX it is matrix products with the windowed DFT basis instead (same
    values within float32 rounding; `_dft_power`): ONNX has no complex tensors, and ONNX
    Runtime's STFT and DFT operators were several times slower than matrix products on a
    10 s file (`benchmarks/onnx_front_end.py`). The cost grows with the bins computed, so
    callers list only those they read.
    """
    index = list(range(bins)) if isinstance(bins, int) else bins
    if torch.onnx.is_in_onnx_export():
        return _dft_power(wave, n_fft, hop, window, index if index is not None else list(range(n_fft // 2 + 1)), center)
    spec = torch.stft(
        wave, n_fft, hop_length=hop, win_length=window.numel(), window=window, center=center, return_complex=True
    )
    if index is not None:
        spec = spec[:, : len(index)] if index == list(range(len(index))) else spec[:, index]
    return power(spec)


def _dft_power(
    wave: torch.Tensor, n_fft: int, hop: int, window: torch.Tensor, bins: list[int], center: bool
) -> torch.Tensor:
    """`stft_power` as matrix products with the windowed DFT basis of the listed bins.

    The window is symmetric about its centre c, which sits at n_fft / 2, so each bin is
    ``(-1)^k`` times a cosine sum over ``x[c+m] + x[c-m]`` and a sine sum over ``x[c+m] - x[c-m]``:
    half the multiply-adds of the plain basis (`benchmarks/onnx_front_end.py`: 4.5 ms against
    7.2 ms for a strided convolution with the full basis). The sign drops out of the power.
    """
    win = int(window.numel())  # a plain int: while tracing, numel() is a traced value
    offset, half = (n_fft - win) // 2, win // 2
    w = window.detach().cpu().numpy().astype(np.float64)
    if win % 2 or w[0] != 0 or np.abs(w[half + 1 :] - w[half - 1 : 0 : -1]).max() > 1e-6:  # float32 rounding
        raise ValueError("the ONNX front end needs an even window, symmetric about its centre, that starts at 0 (Hann)")
    # numpy, not torch ops: the exporter then stores the bases as weights instead of tracing their making
    angle = 2 * np.pi * np.arange(half)[:, None] * np.asarray(bins, dtype=np.float64)[None, :] / n_fft
    cos, sin = np.cos(angle) * w[half:, None], np.sin(angle) * w[half:, None]
    cos[0] *= 0.5  # m = 0: x[c] is counted twice in x[c+m] + x[c-m]
    x = torch.nn.functional.pad(wave[:, None], (n_fft // 2, n_fft // 2), mode="reflect")[:, 0] if center else wave
    frames = (x.shape[-1] - n_fft) // hop + 1
    # Frames as whole hops side by side: `blocks` hops cover the window (unfold does not export).
    blocks = -(-win // hop)
    x = torch.nn.functional.pad(x[:, offset:], (0, blocks * hop))
    hops = x[:, : (frames + blocks - 1) * hop].reshape(x.shape[0], -1, hop)
    framed = torch.cat([hops[:, i : i + frames] for i in range(blocks)], dim=-1)  # (batch, frames, >= win)
    right, left = framed[:, :, half:win], framed[:, :, 1 : half + 1].flip(-1)
    re = torch.matmul(right + left, torch.from_numpy(cos).to(wave.dtype))
    im = torch.matmul(right - left, torch.from_numpy(sin).to(wave.dtype))
    return (re.square() + im.square()).transpose(1, 2)


class PowerSpectrum(nn.Module):
    """|STFT|^2 of a (batch, samples) waveform: (batch, 257, frames)."""

    def __init__(self):
        super().__init__()
        self.register_buffer("window", torch.hann_window(WIN), persistent=False)

    def forward(self, wave: torch.Tensor) -> torch.Tensor:
        return stft_power(wave, N_FFT, HOP, self.window)


class LogMel(FeatureBank):
    """Log mel energies, (batch, n_mels, frames); band i is the i-th of `mel_filters(n_mels)`.

    A `FeatureBank`: its features are the mel bands, rows of the filterbank buffer.
    """

    def __init__(self, n_mels: int):
        super().__init__()
        self.spectrum = PowerSpectrum()
        self.register_buffer("filters", torch.from_numpy(mel_filters(n_mels)))

    def forward(self, wave: torch.Tensor) -> torch.Tensor:
        return torch.log(self.energies(wave) + 1e-6)

    def energies(self, wave: torch.Tensor, center: bool = True) -> torch.Tensor:
        """Mel energies, (batch, n_mels, frames). In ONNX only the bins some filter reads are
        computed: a model with few bands kept reads few bins."""
        if torch.onnx.is_in_onnx_export():  # the filters are fixed in an exported model
            used = [i for i, read in enumerate((self.filters != 0).any(0).tolist()) if read] or [0]
            return torch.matmul(self.filters[:, used], stft_power(wave, N_FFT, HOP, self.spectrum.window, used, center))
        spec = self.spectrum(wave) if center else stft_power(wave, N_FFT, HOP, self.spectrum.window, center=False)
        return torch.matmul(self.filters, spec)

    @property
    def out_features(self) -> int:
        return self.filters.shape[0]

    def keep_features(self, idxs) -> None:
        self.filters = self.filters[list(idxs)].contiguous()  # a registered buffer stays one

    def spread_features(self) -> None:
        spread_bands(self)


class LFCC(nn.Module):
    """Linear-frequency cepstral coefficients with deltas and delta-deltas (the ASVspoof
    baseline front end): `n_filters` linear triangles, log, DCT to `n_ceps`, then
    ``[c, delta c, delta^2 c]`` stacked: (batch, 3 * n_ceps, frames)."""

    def __init__(self, n_filters: int = 30, n_ceps: int = 20):
        super().__init__()
        self.spectrum = PowerSpectrum()
        edges = np.linspace(0, SAMPLE_RATE / 2, n_filters + 2)
        self.register_buffer("filters", torch.from_numpy(triangular_filters(edges)))
        k = np.arange(n_filters)
        dct = np.cos(math.pi / n_filters * (k[None, :] + 0.5) * np.arange(n_ceps)[:, None]) * math.sqrt(2 / n_filters)
        self.register_buffer("dct", torch.from_numpy(dct.astype(np.float32)))
        self.register_buffer("delta", torch.tensor([[[-0.5, 0.0, 0.5]]]).repeat(n_ceps, 1, 1), persistent=False)
        self.n_ceps = n_ceps

    def _deltas(self, c: torch.Tensor) -> torch.Tensor:
        padded = torch.nn.functional.pad(c, (1, 1), mode="replicate")
        return torch.nn.functional.conv1d(padded, self.delta, groups=self.n_ceps)

    def forward(self, wave: torch.Tensor) -> torch.Tensor:
        c = torch.matmul(self.dct, torch.log(torch.matmul(self.filters, self.spectrum(wave)) + 1e-6))
        d = self._deltas(c)
        return torch.cat([c, d, self._deltas(d)], dim=1)


class LowBandSpectrogram(nn.Module):
    """Log power of the STFT bins from 0 to `max_hz`: (batch, bins, frames), bins
    ``max_hz * n_fft / 16000 + 1`` (33 for the defaults), ``n // hop + 1`` frames.

    An alternative anti-spoofing front end with fine frequency resolution (64 ms window,
    15.6 Hz bins) where LFCC's 267 Hz-wide filters blur the low band. On the generated data
    it learns fast from energy below ~80 Hz that the vocoders add, a cue the channel's
    high-pass now removes (`attacks.channel`); without it, LFCC does better. Only the kept
    bins' magnitudes are computed.
    """

    def __init__(self, max_hz: float = 500.0, n_fft: int = 1024, hop: int = 256):
        super().__init__()
        self.n_fft, self.hop, self.bins = n_fft, hop, int(max_hz * n_fft / SAMPLE_RATE) + 1
        if not 1 < self.bins <= n_fft // 2 + 1:
            raise ValueError(f"max_hz={max_hz} keeps {self.bins} bins of a {n_fft}-point STFT")
        self.register_buffer("window", torch.hann_window(n_fft), persistent=False)

    def forward(self, wave: torch.Tensor) -> torch.Tensor:
        return torch.log(stft_power(wave, self.n_fft, self.hop, self.window, self.bins) + 1e-6)
