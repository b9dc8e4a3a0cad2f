"""Mixing speech and noise at a given SNR, and frame labels from clean speech.

Conventions (shared by the generated data and the real-corpus mixtures):

- Frames are at a 10 ms hop (160 samples at 16 kHz), frame `i` centred on sample
  `i * 160`, `n // 160 + 1` frames for `n` samples -- exactly the frames of
  `torch.stft(center=True, hop_length=160)` in the models' front end.
- Frame `i` is speech when the clean speech's mean power over the hop centred on it,
  samples `[160 i - 80, 160 i + 80)`, is above `threshold_db` (-40 dB) relative to the
  loudest such span of the clip. TTS silence is digital zero, so the labels are exact.
- SNR is the clean speech's mean power over its *speech frames* against the noise's mean
  power over the whole clip, in dB (so silence padding does not change the SNR).
"""

from __future__ import annotations

import numpy as np

HOP = 160


def frame_power(x: np.ndarray, hop: int = HOP) -> np.ndarray:
    """Mean power over the hop-long span centred on each frame; `len(x) // hop + 1` frames."""
    n_frames = len(x) // hop + 1
    padded = np.zeros(n_frames * hop + hop, np.float64)
    padded[hop // 2 : hop // 2 + len(x)] = x
    return (padded[: n_frames * hop].reshape(n_frames, hop) ** 2).mean(1)


def frame_labels(clean: np.ndarray, threshold_db: float = -40.0, hop: int = HOP) -> np.ndarray:
    """1 for speech frames of the clean signal, 0 elsewhere (uint8, `len // hop + 1` frames)."""
    power = frame_power(clean, hop)
    peak = power.max()
    if peak <= 0:
        return np.zeros(power.shape, np.uint8)
    return (power > peak * 10 ** (threshold_db / 10)).astype(np.uint8)


def speech_power(clean: np.ndarray, labels: np.ndarray, hop: int = HOP) -> float:
    """Mean power of the clean speech over its speech frames."""
    power = frame_power(clean, hop)
    return float(power[labels.astype(bool)].mean()) if labels.any() else 0.0


def mixture_snr(clean: np.ndarray, noise: np.ndarray, labels: np.ndarray) -> float:
    """SNR in dB of `clean + noise` under this module's definition."""
    return 10 * np.log10(speech_power(clean, labels) / np.mean(noise.astype(np.float64) ** 2))


def mix_at_snr(
    clean: np.ndarray, noise: np.ndarray, snr_db: float, labels: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """(mixture, scaled noise) with the noise scaled so the mixture has `snr_db`."""
    p_speech = speech_power(clean, labels)
    p_noise = float(np.mean(noise.astype(np.float64) ** 2))
    if p_speech <= 0 or p_noise <= 0:
        raise ValueError("mix_at_snr needs speech with speech frames and non-silent noise")
    gain = np.sqrt(p_speech / (p_noise * 10 ** (snr_db / 10)))
    scaled = (noise * gain).astype(np.float32)
    return (clean + scaled).astype(np.float32), scaled


def place_utterances(utterances: list[np.ndarray], n: int, rng: np.random.Generator, min_gap: int = 1600) -> np.ndarray:
    """Clean track of `n` samples with the utterances placed in order, silence around and
    between them (gaps of at least `min_gap`); utterances that do not fit are cut."""
    track = np.zeros(n, np.float32)
    total = sum(u.size for u in utterances)
    free = max(0, n - total - min_gap * (len(utterances) + 1))
    cuts = np.sort(rng.uniform(0, free, size=len(utterances))) if free else np.zeros(len(utterances))
    pos, used = 0, 0.0
    for cut, utt in zip(cuts, utterances):
        pos += min_gap + int(cut - used)
        used = cut
        if pos >= n:
            break
        seg = utt[: n - pos]
        track[pos : pos + seg.size] = seg
        pos += seg.size
    return track
