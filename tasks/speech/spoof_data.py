"""Generated anti-spoofing data: bona fide synthetic utterances and their vocoded copies.

For each utterance of a split (voices and sentences disjoint between splits): a crop of
`clip_seconds` (a little more is vocoded, then cut, to avoid edge effects) is kept as bona
fide, and spoofed by attacks -- in ``train`` and ``val`` one *seen* attack per utterance,
in ``test`` every attack (seen and unseen), as ASVspoof keeps some attacks for evaluation
only. Each clip of either class then goes through an independent random channel
(`attacks.channel`). Every utterance is seeded by (seed, split, index), and made in fixed shards in fresh
processes (`tasks.speech.shards`), so the data do not depend on espeak-ng's state.
"""
from __future__ import annotations

import numpy as np

from tasks.speech.attacks import ATTACKS, channel
from tasks.speech.shards import run_shards
from tasks.speech.synthesis import SAMPLE_RATE, Synthesizer, random_voice, sentences

SPLIT_IDS = {"train": 0, "val": 1, "test": 2}
GENERATOR_VERSION = 2  # bump when the generator changes in a way settings do not show
BONAFIDE = -1  # attack index of bona fide clips


def _crop(x: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    if x.size <= n:
        return np.pad(x, (0, n - x.size))
    start = int(rng.integers(x.size - n + 1))
    return x[start : start + n]


SHARD = 25  # utterances per worker process (fixed: part of what makes a clip reproducible)


def generate_utterances(start: int, stop: int, split: str, clip_seconds: float, seed: int, seen: list[str],
                        unseen: list[str]) -> dict[str, np.ndarray]:
    """Clips of utterances `start..stop-1`: ``audio`` int16 (n, samples); ``attack`` int8
    (n,): index into seen + unseen, or -1 for bona fide; ``utterance`` int32 (n,)."""
    synth = Synthesizer()
    names = seen + unseen
    n = int(clip_seconds * SAMPLE_RATE)
    audio, attack, utt = [], [], []
    for i in range(start, stop):
        rng = np.random.default_rng([seed, SPLIT_IDS[split], i])
        speech = synth.say(sentences(rng, 1)[0], random_voice(rng, split))
        source = _crop(speech, n + 3200, rng)  # 0.1 s margin on each side
        chosen = names if split == "test" else [seen[rng.integers(len(seen))]]
        clips = [(BONAFIDE, source)] + [(names.index(a), ATTACKS[a](source, rng)) for a in chosen]
        for index, clip in clips:
            audio.append(np.round(channel(clip[1600 : 1600 + n], rng) * 32767).astype(np.int16))
            attack.append(index)
            utt.append(i)
    return {"audio": np.stack(audio), "attack": np.array(attack, np.int8), "utterance": np.array(utt, np.int32)}


def generate_split(split: str, n_utterances: int, clip_seconds: float, seed: int, seen: list[str], unseen: list[str],
                   progress: bool = True) -> dict[str, np.ndarray]:
    """A whole split, in shards of `SHARD` utterances each made in a fresh process
    (`tasks.speech.shards`): the same arrays for the same arguments, always."""
    args = (split, clip_seconds, seed, list(seen), list(unseen))
    return run_shards(generate_utterances, n_utterances, SHARD, args, desc=f"antispoof {split} data", progress=progress)
