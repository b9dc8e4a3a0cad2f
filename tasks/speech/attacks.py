"""Spoofing attacks made here (vocoder resynthesis) and channel effects applied to both classes.

Every attack maps a bona fide float32 waveform at 16 kHz to a spoofed one of the same
length, deterministically for a given `rng`. Attacks: Griffin-Lim phase reconstruction,
an LPC vocoder (pulse/noise excitation through per-frame LPC filters), the WORLD vocoder
(pyworld), an MLSA vocoder (pysptk mel-cepstrum), and WORLD with pitch and formant shifts.
`channel` applies a high-pass, gain, band-limiting (telephone band via 8 kHz resampling),
mu-law quantisation and background noise at random -- to *both* classes, so bandwidth,
noise floor or the lowest few tens of Hz cannot give the class away.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from scipy import signal

SR = 16000
FRAME_PERIOD_MS = 5.0


def _pyworld():
    """pyworld, imported without its pkg_resources deprecation warning (one per worker)."""
    import warnings

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="pkg_resources is deprecated", category=UserWarning)
        import pyworld
    return pyworld


def _match_level(y: np.ndarray, x: np.ndarray) -> np.ndarray:
    y = np.nan_to_num(y[: x.size], nan=0.0, posinf=0.0, neginf=0.0)
    if y.size < x.size:
        y = np.pad(y, (0, x.size - y.size))
    ry, rx = np.sqrt(np.mean(y**2)), np.sqrt(np.mean(x**2))
    return (y * (rx / ry if ry > 0 else 0.0)).astype(np.float32)


def _dither(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    # TTS silence is digital zero: vocoders (pyworld, pysptk) need a little noise.
    return x.astype(np.float64) + 1e-4 * rng.standard_normal(x.size)


def griffin_lim(x: np.ndarray, rng: np.random.Generator, iterations: int = 24) -> np.ndarray:
    """Keep the STFT magnitude, rebuild the phase by Griffin-Lim from a random start."""
    _, _, spec = signal.stft(x, SR, nperseg=512, noverlap=384)
    mag = np.abs(spec)
    phase = np.exp(2j * np.pi * rng.random(mag.shape))
    for _ in range(iterations):
        _, y = signal.istft(mag * phase, SR, nperseg=512, noverlap=384)
        _, _, est = signal.stft(y[: x.size], SR, nperseg=512, noverlap=384)
        phase = np.exp(1j * np.angle(est[:, : mag.shape[1]]))
    _, y = signal.istft(mag * phase, SR, nperseg=512, noverlap=384)
    return _match_level(y, x)


def _f0(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    pyworld = _pyworld()

    f0, t = pyworld.dio(x, SR, frame_period=FRAME_PERIOD_MS)
    return pyworld.stonemask(x, f0, t, SR), t


def _excitation(f0: np.ndarray, n: int, rng: np.random.Generator, hop: int) -> np.ndarray:
    """Pulse train at f0 where voiced, white noise where not (sample-level)."""
    f = np.repeat(f0, hop)[:n]
    f = np.pad(f, (0, n - f.size), mode="edge") if f.size < n else f
    voiced = f > 0
    phase = np.cumsum(np.where(voiced, f, 0.0) / SR)
    pulses = (np.diff(np.floor(phase), prepend=0.0) > 0).astype(np.float64)
    pulses *= np.sqrt(np.maximum(f, 1.0) / SR * SR / 100.0)
    return np.where(voiced, pulses, 0.3 * rng.standard_normal(n))


def lpc(x: np.ndarray, rng: np.random.Generator, order: int = 16) -> np.ndarray:
    """LPC vocoder: per 20 ms frame (10 ms hop) an all-pole filter driven by pulses/noise."""
    from scipy.linalg import solve_toeplitz

    xd = _dither(x, rng)
    f0, _ = _f0(xd)
    hop, win = 160, 320
    exc = _excitation(f0, xd.size, rng, int(SR * FRAME_PERIOD_MS / 1000))
    window = np.hanning(win)
    y = np.zeros(xd.size + win)
    for start in range(0, xd.size - win, hop):
        frame = xd[start : start + win] * window
        r = np.correlate(frame, frame, "full")[win - 1 : win + order]
        if r[0] <= 1e-10:
            continue
        a = solve_toeplitz(r[:order] + np.r_[r[0] * 1e-6, np.zeros(order - 1)], r[1 : order + 1])
        gain = np.sqrt(max(r[0] - a @ r[1 : order + 1], 1e-12))
        e = exc[start : start + win]
        out = signal.lfilter([1.0], np.r_[1.0, -a], e / (np.sqrt(np.mean(e**2)) + 1e-9)) * gain / np.sqrt(win)
        y[start : start + win] += out * window
    return _match_level(y, x)


def world(x: np.ndarray, rng: np.random.Generator, f0_scale: float = 1.0, formant_scale: float = 1.0) -> np.ndarray:
    """WORLD analysis-synthesis; optional pitch (`f0_scale`) and formant (`formant_scale`) shifts."""
    pyworld = _pyworld()

    xd = _dither(x, rng)
    f0, t = _f0(xd)
    sp = pyworld.cheaptrick(xd, f0, t, SR)
    ap = pyworld.d4c(xd, f0, t, SR)
    if formant_scale != 1.0:  # warp the envelope's frequency axis
        bins = np.arange(sp.shape[1])
        src = np.clip(bins / formant_scale, 0, sp.shape[1] - 1)
        sp = np.stack([np.interp(src, bins, row) for row in sp])
    y = pyworld.synthesize(f0 * f0_scale, sp, ap, SR, FRAME_PERIOD_MS)
    return _match_level(y, x)


def world_shift(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """WORLD with a random pitch shift (x0.75-0.9 or x1.1-1.3) and formant shift (x0.9-1.1)."""
    f0_scale = rng.choice([rng.uniform(0.75, 0.9), rng.uniform(1.1, 1.3)])
    return world(x, rng, f0_scale=float(f0_scale), formant_scale=float(rng.uniform(0.9, 1.1)))


def mlsa(x: np.ndarray, rng: np.random.Generator, order: int = 24, alpha: float = 0.42) -> np.ndarray:
    """MLSA vocoder: mel-cepstra (pysptk) per 10 ms, pulse/noise excitation, MLSA filter."""
    import pysptk
    from pysptk.synthesis import MLSADF, Synthesizer

    xd = _dither(x, rng)
    hop, win = 160, 512  # 10 ms: the per-frame mel-cepstrum fit is most of the cost
    f0 = _f0(xd)[0][:: hop // int(SR * FRAME_PERIOD_MS / 1000)]
    padded = np.pad(xd, (win // 2, win // 2))
    n_frames = xd.size // hop + 1
    frames = np.stack([padded[i * hop : i * hop + win] for i in range(n_frames)]) * pysptk.blackman(win)
    mc = pysptk.mcep(frames, order=order, alpha=alpha, etype=1, eps=1e-8)
    b = pysptk.mc2b(mc, alpha)
    exc = _excitation(np.pad(f0, (0, max(0, n_frames - f0.size)))[:n_frames], n_frames * hop, rng, hop)
    y = Synthesizer(MLSADF(order=order, alpha=alpha), hop).synthesis(exc, b)
    return _match_level(y, x)


ATTACKS: dict[str, Callable[[np.ndarray, np.random.Generator], np.ndarray]] = {
    "griffin_lim": griffin_lim,
    "lpc": lpc,
    "world": world,
    "mlsa": mlsa,
    "world_shift": world_shift,
}


def channel(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Random channel: maybe telephone band, maybe mu-law 8 bit, maybe noise, a high-pass,
    gain; plus dither."""
    y = x.astype(np.float64)
    if rng.random() < 0.25:  # narrowband codec: 8 kHz sampling
        y = signal.resample_poly(signal.resample_poly(y, 1, 2), 2, 1)[: x.size]
    if rng.random() < 0.2:  # mu-law companding to 8 bits
        mu = 255.0
        peak = np.max(np.abs(y)) + 1e-9
        z = np.sign(y / peak) * np.log1p(mu * np.abs(y / peak)) / np.log1p(mu)
        z = np.round(z * 127) / 127
        y = peak * np.sign(z) * np.expm1(np.abs(z) * np.log1p(mu)) / mu
    if rng.random() < 0.4:  # background noise 20-45 dB below the signal
        rms = np.sqrt(np.mean(y**2)) + 1e-9
        y = y + rms * 10 ** (-rng.uniform(20, 45) / 20) * rng.standard_normal(y.size)
    # A microphone/playback high-pass (60-150 Hz, order 2-4), always: the vocoders add energy
    # below ~80 Hz that espeak-ng's speech lacks, which a model otherwise learns instead of
    # the vocoding artefacts (seen-attack EER ~7 % with that cue, ~25 % without it).
    cutoff, order = rng.uniform(60, 150), int(rng.integers(2, 5))
    y = signal.sosfilt(signal.butter(order, cutoff, "highpass", fs=SR, output="sos"), y)
    y = y * 10 ** (rng.uniform(-12, 3) / 20)
    y = y + 10 ** (-70 / 20) * rng.standard_normal(y.size)  # dither: no digital silence in either class
    return np.clip(y, -1, 1).astype(np.float32)
