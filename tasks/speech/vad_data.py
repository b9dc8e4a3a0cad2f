"""Generated VAD data: synthetic speech with silences, mixed with noise at SNRs in -5..35 dB.

One clip = 1-3 utterances (20-75% of the clip) of a split's voices placed with silence around and between them
(`mixing.place_utterances`), plus one noise (a procedural type, babble of other voices of
the same split, or a user's sound file) at an SNR drawn uniformly from `snr_range`, so the
bins <5, 5-15, 15-25 and >=25 dB each get about a quarter of the clips. Labels come from
the clean speech (`mixing.frame_labels`). The clip is then scaled to a random peak level.

Splits are disjoint in voices (`synthesis.voice_pool`), in sentences (each split draws
text from its own random stream) and in noise seeds. Every clip is seeded by
(seed, split, index) and synthetic splits are made in fixed shards in fresh processes
(`tasks.speech.shards`), so a clip does not depend on how many others are made.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from tqdm.auto import tqdm

from tasks.speech import noise as noises
from tasks.speech.mixing import frame_labels, mix_at_snr, place_utterances
from tasks.speech.shards import run_shards
from tasks.speech.synthesis import SAMPLE_RATE, Synthesizer, random_voice, sentences

SPLIT_IDS = {"train": 0, "val": 1, "test": 2}
GENERATOR_VERSION = 2  # bump when the generator changes in a way settings do not show


@dataclass
class Mixture:
    wave: np.ndarray  # float32 mixture, scaled
    clean: np.ndarray  # float32 speech track, same scale
    noise: np.ndarray  # float32 noise track, same scale
    labels: np.ndarray  # uint8 per 10 ms frame
    snr_db: float
    noise_type: str


UtteranceSource = Callable[[np.random.Generator], np.ndarray]
NoiseSource = Callable[[np.random.Generator, int], tuple[str, np.ndarray]]


def synthetic_sources(
    split: str, noise_types: list[str], noise_clips: list[np.ndarray] | None = None, voices: list[tuple[str, str]] = ()
) -> tuple[UtteranceSource, NoiseSource]:
    """espeak-ng utterances of the split's voices (and of its flite/festival `voices`, see
    `synthesis.random_voice`); noise of `noise_types` ("babble": other espeak-ng voices of
    the split; "file": one of `noise_clips`)."""
    synth = Synthesizer()

    def utterance(rng: np.random.Generator) -> np.ndarray:
        return synth.say(sentences(rng, 1)[0], random_voice(rng, split, voices))

    def noise(rng: np.random.Generator, n: int) -> tuple[str, np.ndarray]:
        kind = noise_types[rng.integers(len(noise_types))]
        if kind == "babble":
            return kind, noises.babble(rng, n, synth, split)
        if kind == "file":
            return kind, noises.fit_length(noise_clips[rng.integers(len(noise_clips))], n, rng)
        return kind, noises.NOISE_TYPES[kind](rng, n)

    return utterance, noise


def pool_sources(
    speech: list[np.ndarray], noise_clips: list[np.ndarray], noise_kind: str = "file"
) -> tuple[UtteranceSource, NoiseSource]:
    """Utterances and noises drawn from lists of recordings (the real-corpus source)."""
    return (
        lambda rng: speech[rng.integers(len(speech))],
        lambda rng, n: (noise_kind, noises.fit_length(noise_clips[rng.integers(len(noise_clips))], n, rng)),
    )


def make_mixture(
    rng: np.random.Generator,
    utterance: UtteranceSource,
    noise_source: NoiseSource,
    n_samples: int,
    snr_range: tuple[float, float],
) -> Mixture:
    """One clip of `n_samples`: utterances, a noise and an SNR drawn from `rng`."""
    target = rng.uniform(0.2, 0.75) * n_samples  # speech share of the clip: 20-75%
    utterances: list[np.ndarray] = []
    while sum(u.size for u in utterances) < target and len(utterances) < 3:
        u = utterance(rng)
        utterances.append(u[: int(target) - sum(v.size for v in utterances) + 1600] if u.size else u)
    clean = place_utterances([u for u in utterances if u.size], n_samples, rng, min_gap=int(rng.integers(1600, 8000)))
    labels = frame_labels(clean)
    kind, noise = noise_source(rng, n_samples)
    snr = float(rng.uniform(*snr_range))
    if labels.any():
        mixture, noise = mix_at_snr(clean, noise, snr, labels)
    else:  # nothing fitted (cannot happen with >= 1 s clips): noise only, at speech-like level
        mixture, noise = 0.05 * noise, 0.05 * noise
    peak = float(np.max(np.abs(mixture))) + 1e-9
    gain = rng.uniform(0.05, 0.9) / peak
    return Mixture(
        (mixture * gain).astype(np.float32),
        (clean * gain).astype(np.float32),
        (noise * gain).astype(np.float32),
        labels,
        snr,
        kind,
    )


SHARD = 50  # clips per worker process (fixed: part of what makes a clip reproducible)


def generate_clips(
    start: int,
    stop: int,
    split: str,
    clip_seconds: float,
    seed: int,
    snr_range: tuple[float, float],
    utterance: UtteranceSource,
    noise_source: NoiseSource,
    noise_kinds: list[str],
    progress: bool = False,
) -> dict[str, np.ndarray]:
    """Clips `start..stop-1` of a split: ``audio`` int16 (n, samples), ``labels`` uint8
    (n, frames), ``snr`` float32 (n,), ``noise`` int8 index into `noise_kinds` (n,)."""
    n_clips, n_samples = stop - start, int(clip_seconds * SAMPLE_RATE)
    audio = np.zeros((n_clips, n_samples), np.int16)
    labels = np.zeros((n_clips, n_samples // 160 + 1), np.uint8)
    snr = np.zeros(n_clips, np.float32)
    kinds = np.zeros(n_clips, np.int8)
    for j in tqdm(range(n_clips), desc=f"vad {split} data", unit="clip", disable=not progress or None, leave=False):
        rng = np.random.default_rng([seed, SPLIT_IDS[split], start + j])
        m = make_mixture(rng, utterance, noise_source, n_samples, snr_range)
        audio[j] = np.round(np.clip(m.wave, -1, 1) * 32767)
        labels[j], snr[j], kinds[j] = m.labels, m.snr_db, noise_kinds.index(m.noise_type)
    return {"audio": audio, "labels": labels, "snr": snr, "noise": kinds}


def _synthetic_shard(
    start: int,
    stop: int,
    split: str,
    clip_seconds: float,
    seed: int,
    snr_range: tuple[float, float],
    noise_types: list[str],
    noise_clips: list[np.ndarray] | None,
    noise_kinds: list[str],
    voices: list[tuple[str, str]] = (),
) -> dict[str, np.ndarray]:
    utterance, noise_source = synthetic_sources(split, noise_types, noise_clips, voices)
    return generate_clips(start, stop, split, clip_seconds, seed, snr_range, utterance, noise_source, noise_kinds)


def generate_synthetic(
    split: str,
    n_clips: int,
    clip_seconds: float,
    seed: int,
    snr_range: tuple[float, float],
    noise_types: list[str],
    noise_clips: list[np.ndarray] | None,
    noise_kinds: list[str],
    progress: bool = True,
    voices: list[tuple[str, str]] = (),
) -> dict[str, np.ndarray]:
    """A whole synthetic split, made in shards of `SHARD` clips, each in a fresh process
    (`tasks.speech.shards`): the same arrays for the same arguments, always. `voices`:
    flite/festival (engine, voice) pairs to draw from as well."""
    args = (
        split,
        clip_seconds,
        seed,
        tuple(snr_range),
        list(noise_types),
        noise_clips,
        list(noise_kinds),
        [tuple(v) for v in voices],
    )
    return run_shards(_synthetic_shard, n_clips, SHARD, args, desc=f"vad {split} data", progress=progress)
