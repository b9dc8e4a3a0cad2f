"""Procedural noise (numpy only) and noise from a user's directory of sound files.

Every generator takes a numpy `Generator` and a length in samples at 16 kHz and returns
float32 noise of unit RMS, so mixing sets the level. `NOISE_TYPES` lists the procedural
kinds; babble (mixed synthetic voices) needs the synthesiser and is made in `babble`.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from tasks.speech.synthesis import SAMPLE_RATE, Synthesizer, random_voice, sentences


def _unit(x: np.ndarray) -> np.ndarray:
    x = x - x.mean()
    rms = np.sqrt(np.mean(x**2))
    return (x / rms if rms > 0 else x).astype(np.float32)


def _coloured(rng: np.random.Generator, n: int, exponent: float) -> np.ndarray:
    """Noise with power spectrum ~ 1/f**exponent (0 white, 1 pink, 2 brown)."""
    spec = np.fft.rfft(rng.standard_normal(n))
    f = np.fft.rfftfreq(n, 1 / SAMPLE_RATE)
    f[0] = f[1]
    return np.fft.irfft(spec / f ** (exponent / 2), n)


def white(rng, n):
    return _unit(rng.standard_normal(n))


def pink(rng, n):
    return _unit(_coloured(rng, n, 1.0))


def brown(rng, n):
    return _unit(_coloured(rng, n, 2.0))


def hum(rng, n):
    """Mains hum: 50 or 60 Hz with decaying odd and even harmonics, slight jitter."""
    t = np.arange(n) / SAMPLE_RATE
    base = rng.choice([50.0, 60.0]) * (1 + 0.002 * rng.standard_normal())
    x = sum(
        rng.uniform(0.2, 1.0) / k * np.sin(2 * np.pi * k * base * t + rng.uniform(0, 2 * np.pi)) for k in range(1, 12)
    )
    return _unit(x + 0.01 * rng.standard_normal(n))


def clicks(rng, n):
    """Sparse impulses with short decaying ringing (keyboard, crackle)."""
    x = 0.01 * rng.standard_normal(n)
    for pos in rng.integers(0, n, size=max(1, int(n / SAMPLE_RATE * rng.uniform(3, 30)))):
        length = int(rng.integers(20, 400))
        burst = rng.standard_normal(length) * np.exp(-np.arange(length) / (length / 5))
        end = min(n, pos + length)
        x[pos:end] += rng.uniform(0.3, 1.0) * burst[: end - pos]
    return _unit(x)


def siren(rng, n):
    """A tone swept up and down (frequency modulated between two pitches)."""
    t = np.arange(n) / SAMPLE_RATE
    lo, hi = rng.uniform(400, 800), rng.uniform(900, 1600)
    rate = rng.uniform(0.2, 3.0)
    freq = lo + (hi - lo) * 0.5 * (1 + np.sin(2 * np.pi * rate * t))
    phase = 2 * np.pi * np.cumsum(freq) / SAMPLE_RATE
    return _unit(np.sin(phase) + 0.3 * np.sin(2 * phase) + 0.02 * rng.standard_normal(n))


def engine(rng, n):
    """Low harmonic rumble with slow amplitude modulation plus brown noise."""
    t = np.arange(n) / SAMPLE_RATE
    f0 = rng.uniform(25, 90)
    x = sum(np.sin(2 * np.pi * k * f0 * t + rng.uniform(0, 6.3)) / k for k in range(1, 8))
    x *= 1 + 0.3 * np.sin(2 * np.pi * rng.uniform(0.5, 4) * t)
    return _unit(x / np.std(x) + 0.5 * brown(rng, n))


def rain(rng, n):
    """Many short high-passed noise bursts on a pink bed."""
    x = 0.3 * pink(rng, n)
    drops = rng.integers(0, n, size=int(n / SAMPLE_RATE * rng.uniform(50, 400)))
    for pos in drops:
        length = int(rng.integers(30, 200))
        end = min(n, pos + length)
        burst = np.diff(rng.standard_normal(length + 1)) * np.exp(-np.arange(length) / (length / 4))
        x[pos:end] += rng.uniform(0.1, 1.0) * burst[: end - pos]
    return _unit(x)


NOISE_TYPES: dict[str, Callable[[np.random.Generator, int], np.ndarray]] = {
    "white": white,
    "pink": pink,
    "brown": brown,
    "hum": hum,
    "clicks": clicks,
    "siren": siren,
    "engine": engine,
    "rain": rain,
}


def babble(
    rng: np.random.Generator, n: int, synth: Synthesizer, split: str, talkers: tuple[int, int] = (3, 7)
) -> np.ndarray:
    """Several synthetic voices of `split` talking at once, looped to fill `n` samples."""
    x = np.zeros(n, np.float64)
    for text in sentences(rng, int(rng.integers(*talkers))):
        voice = synth.say(text, random_voice(rng, split))
        if voice.size == 0:
            continue
        reps = np.tile(voice, n // voice.size + 2)
        start = int(rng.integers(voice.size))
        x += reps[start : start + n] / (np.sqrt(np.mean(voice**2)) + 1e-9)
    return _unit(x)


def noise_files(directory: str | Path) -> list[Path]:
    """Sound files (wav, flac, ogg) under a user's noise directory, sorted."""
    root = Path(directory)
    if not root.is_dir():
        from bench.config import ConfigError

        raise ConfigError(
            f"noise directory {root} does not exist (task.noise_dir must name a folder of .wav/.flac/.ogg files)"
        )
    return sorted(p for p in root.rglob("*") if p.suffix.lower() in (".wav", ".flac", ".ogg"))


def fit_length(x: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """Loop or crop `x` to `n` samples from a random offset; unit RMS."""
    reps = np.tile(x, n // max(1, x.size) + 2)
    start = int(rng.integers(max(1, x.size)))
    return _unit(reps[start : start + n])
