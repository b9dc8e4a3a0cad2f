"""Generated anti-spoofing data: bona fide synthetic utterances and their vocoded copies.

For each utterance of a split (voices and sentences disjoint between splits): a crop of
`clip_seconds` (a little more is vocoded, then cut, to avoid edge effects) is kept as bona
fide, and spoofed by attacks -- in ``train`` and ``val`` one *seen* attack per utterance,
in ``test`` every attack (seen and unseen), as ASVspoof keeps some attacks for evaluation
only. Each clip of either class then goes through an independent random channel
(`attacks.channel`). Every utterance is seeded by (seed, split, index), and made in fixed shards in fresh
processes (`tasks.speech.shards`), so the data do not depend on espeak-ng's state.

Recorded speech (`generate_recorded`), when the user has some, goes through the same
steps: each recording is a bona fide utterance, spoofed by the same attacks, seeded by
(seed, split, RECORDED, index) so it never shares a random stream with a synthetic one.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from tasks.speech.attacks import ATTACKS, channel
from tasks.speech.corpora import read_audio
from tasks.speech.shards import run_shards
from tasks.speech.synthesis import SAMPLE_RATE, Synthesizer, random_voice, sentences

SPLIT_IDS = {"train": 0, "val": 1, "test": 2}
GENERATOR_VERSION = 4  # bump when the generator changes in a way settings do not show (4: channel high-pass)
BONAFIDE = -1  # attack index of bona fide clips
RECORDED = 1  # extra seed word of recorded utterances (synthetic ones have none)


def _crop(x: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    if x.size <= n:
        return np.pad(x, (0, n - x.size))
    start = int(rng.integers(x.size - n + 1))
    return x[start : start + n]


SHARD = 50  # utterances per worker process (fixed: part of what makes a clip reproducible); a process starts in ~1 s


def _utterance_clips(
    speech: np.ndarray, rng: np.random.Generator, split: str, n: int, seen: list[str], unseen: list[str]
) -> tuple[list[np.ndarray], list[int]]:
    """One utterance's bona fide clip and its spoofs (int16, `n` samples) and their attack indices."""
    names = seen + unseen
    source = _crop(speech, n + 3200, rng)  # 0.1 s margin on each side
    chosen = names if split == "test" else [seen[rng.integers(len(seen))]]
    clips = [(BONAFIDE, source)] + [(names.index(a), ATTACKS[a](source, rng)) for a in chosen]
    audio = [np.round(channel(clip[1600 : 1600 + n], rng) * 32767).astype(np.int16) for _, clip in clips]
    return audio, [index for index, _ in clips]


def _stacked(audio: list[np.ndarray], attack: list[int], utt: list[int]) -> dict[str, np.ndarray]:
    return {"audio": np.stack(audio), "attack": np.array(attack, np.int8), "utterance": np.array(utt, np.int32)}


def generate_utterances(
    start: int,
    stop: int,
    split: str,
    clip_seconds: float,
    seed: int,
    seen: list[str],
    unseen: list[str],
    voices: list[tuple[str, str]] = (),
) -> dict[str, np.ndarray]:
    """Clips of utterances `start..stop-1`: ``audio`` int16 (n, samples); ``attack`` int8
    (n,): index into seen + unseen, or -1 for bona fide; ``utterance`` int32 (n,).
    `voices`: flite/festival (engine, voice) pairs to draw from as well (`synthesis.random_voice`)."""
    synth = Synthesizer()
    n = int(clip_seconds * SAMPLE_RATE)
    audio, attack, utt = [], [], []
    for i in range(start, stop):
        rng = np.random.default_rng([seed, SPLIT_IDS[split], i])
        speech = synth.say(sentences(rng, 1)[0], random_voice(rng, split, voices))
        clips, indices = _utterance_clips(speech, rng, split, n, seen, unseen)
        audio += clips
        attack += indices
        utt += [i] * len(clips)
    return _stacked(audio, attack, utt)


def spoof_recordings(
    start: int,
    stop: int,
    split: str,
    clip_seconds: float,
    seed: int,
    seen: list[str],
    unseen: list[str],
    files: list[tuple[str, int | None]],
) -> dict[str, np.ndarray]:
    """Like `generate_utterances`, for recordings `files[start:stop]` ((path, expected sample
    rate or None), already checked readable): each one peak-normalised, then cropped and spoofed."""
    n = int(clip_seconds * SAMPLE_RATE)
    audio, attack, utt = [], [], []
    for i in range(start, stop):
        rng = np.random.default_rng([seed, SPLIT_IDS[split], RECORDED, i])
        speech = read_audio(Path(files[i][0]), files[i][1])
        speech = (0.7 * speech / (np.max(np.abs(speech)) + 1e-9)).astype(
            np.float32
        )  # TTS-like peak; the channel sets the level
        clips, indices = _utterance_clips(speech, rng, split, n, seen, unseen)
        audio += clips
        attack += indices
        utt += [i] * len(clips)
    return _stacked(audio, attack, utt)


def generate_split(
    split: str,
    n_utterances: int,
    clip_seconds: float,
    seed: int,
    seen: list[str],
    unseen: list[str],
    progress: bool = True,
    voices: list[tuple[str, str]] = (),
) -> dict[str, np.ndarray]:
    """A whole split, in shards of `SHARD` utterances each made in a fresh process
    (`tasks.speech.shards`): the same arrays for the same arguments, always."""
    args = (split, clip_seconds, seed, list(seen), list(unseen), [tuple(v) for v in voices])
    return run_shards(generate_utterances, n_utterances, SHARD, args, desc=f"antispoof {split} data", progress=progress)


def generate_recorded(
    split: str,
    files: list[tuple[str, int | None]],
    clip_seconds: float,
    seed: int,
    seen: list[str],
    unseen: list[str],
    progress: bool = True,
) -> dict[str, np.ndarray]:
    """`spoof_recordings` over all `files`, in shards (the attacks are the slow part)."""
    args = (split, clip_seconds, seed, list(seen), list(unseen), [(str(p), sr) for p, sr in files])
    return run_shards(
        spoof_recordings, len(files), SHARD, args, desc=f"antispoof {split} recordings", progress=progress
    )
