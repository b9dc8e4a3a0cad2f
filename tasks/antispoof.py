"""Anti-spoofing (bona fide vs. vocoded speech) per utterance. Error = utterance EER (%).

Data (`task.source`): ``synthetic`` (default, no download: espeak-ng speech as bona fide,
with flite/festival voices when installed and the user's recordings when given
(`bonafide_dir`, `bonafide_vctk`), its vocoder resyntheses as spoofs, a random channel on
both classes, `tasks.speech.spoof_data`) or ``asvspoof2019`` (ASVspoof2019 LA from
`--data-root`: train / dev / eval protocols for train / val / test). Seen attacks are those in training; the
test split adds unseen ones (synthetic: `unseen_attacks`; ASVspoof: systems absent from the
train protocol, A07-A19).

Model: a ResNet34-shaped network (3, 4, 6, 3 basic blocks) at `width` x ResNet34's channels
(64, 128, 256, 512) on LFCC (the ASVspoof baseline's front end) or a low-band log
spectrogram (0-`max_hz` Hz, 64 ms window),
each stage's width a slot `stage1..stage4` (`tasks.speech.spoof_models`). Training batches
are pairs (`SpoofPairs`): each spoofed clip with a bona fide one -- on generated data the
clip it was made from, so the model sees the attack's change and not the speaker's; a
batch of 12 is 24 clips. Evaluation: EER overall, breakdowns ``seen``, ``unseen`` and
``attack_<name>`` (bona fide vs. that attack's spoofs), AUC as secondary.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset

from bench.config import ConfigError, TrainRecipe
from bench.registry import register_task
from tasks.base import Evaluation
from tasks.speech import corpora, metrics, spoof_data, synthesis
from tasks.speech.attacks import ATTACKS
from tasks.speech.cache import cached_arrays
from tasks.speech.datasets import batched_outputs
from tasks.speech.spoof_models import FRONT_ENDS, RESNET34_WIDTHS, ResNetSpoof
from tasks.speech.task import SpeechTask

# Utterances per split (train, val, test) and clip length in seconds, per scale. Small:
# one-second clips (a fixed clip learns faster here than random crops of longer ones); 300
# val utterances, as with 100 one seed's val EER moved by 5-7 points between trainings.
_SIZES = {"smoke": (16, 4, 6, 1.0), "small": (500, 300, 200, 1.0), "full": (4000, 400, 1000, 3.0)}
# Real-corpus utterances per split (0 = all), per scale.
_REAL_FILES = {"smoke": 0, "small": 4000, "full": 20000}
_RECIPES = {
    # batch_size counts (spoof, bona fide) pairs. Small: converged at 240 steps (dense val EER
    # within 10 % of 480 steps', mean of 2 seeds; benchmarks/convergence.py)
    "smoke": TrainRecipe(steps=10, batch_size=4, lr=3e-3),
    "small": TrainRecipe(steps=240, batch_size=12, lr=2e-2),
    "full": TrainRecipe(steps=3000, batch_size=16, lr=2e-3),
}


@dataclass(frozen=True)
class AntispoofConfig:
    source: str = "synthetic"  # synthetic (generated here) | asvspoof2019 (LA under --data-root)
    width: float = 0.125  # multiplier on ResNet34's stage widths 64, 128, 256, 512 (0.125: 8, 16, 32, 64)
    front_end: str = "lfcc"  # lfcc (the ASVspoof baseline's) | lowband (log power, 0..max_hz, 15.6 Hz bins)
    max_hz: float = 500.0  # top of the lowband spectrogram
    n_ceps: int = 20  # LFCC coefficients (x3 with deltas)
    seen_attacks: list[str] = field(default_factory=lambda: ["griffin_lim", "lpc", "world"])  # in train, val and test
    unseen_attacks: list[str] = field(default_factory=lambda: ["mlsa", "world_shift"])  # in test only
    data_seed: int = 1234  # fixes the generated data, the same for every method and run seed
    bonafide_dir: str = ""  # optional folder of .wav/.flac/.ogg recordings (sub-folder = speaker) added as bona fide
    bonafide_vctk: bool = False  # also use VCTK under --data-root as recorded bona fide
    recorded_share: float = 0.5  # share of a split's utterances taken from recordings, when there are some

    def validate(self) -> None:
        if self.source not in ("synthetic", "asvspoof2019"):
            raise ValueError(f"source must be synthetic or asvspoof2019, got {self.source!r}")
        if (self.bonafide_dir or self.bonafide_vctk) and self.source != "synthetic":
            raise ValueError("bonafide_dir and bonafide_vctk add recordings to source=synthetic only")
        if not 0 <= self.recorded_share <= 1:
            raise ValueError(f"recorded_share must be in [0, 1], got {self.recorded_share}")
        if self.front_end not in FRONT_ENDS:
            raise ValueError(f"front_end must be one of {', '.join(FRONT_ENDS)}, got {self.front_end!r}")
        if not 16 <= self.max_hz <= 8000:
            raise ValueError(f"max_hz must be in [16, 8000], got {self.max_hz}")
        if not 0 < self.width <= 4:
            raise ValueError(f"width must be in (0, 4], got {self.width}")
        for name in list(self.seen_attacks) + list(self.unseen_attacks):
            if name not in ATTACKS:
                raise ValueError(f"unknown attack {name!r}; choose from {', '.join(ATTACKS)}")
        if not self.seen_attacks:
            raise ValueError("seen_attacks must name at least one attack")
        if set(self.seen_attacks) & set(self.unseen_attacks):
            raise ValueError("an attack cannot be both seen and unseen")


@register_task("antispoof")
class AntispoofTask(SpeechTask):
    description = "anti-spoofing: bona fide vs. vocoded speech (ResNet34-shaped on LFCC); error = utterance EER %"
    Config = AntispoofConfig
    metric = "eer"
    metric_label = "EER (%)"
    metric_unit = "%"
    iso_tolerance = 0.5  # points of EER
    breakdown_label = "attack / seen-unseen"
    chance_error = 50.0  # scores that ignore the input
    recipes = _RECIPES

    def __init__(self, config=None, scale="small", data_root=None):
        super().__init__(config, scale, data_root)
        if self.config.source == "asvspoof2019":
            if self.data_root is None:
                raise ConfigError("task.source=asvspoof2019 needs --data-root (a folder holding LA/)")
            for split in ("train", "val", "test"):
                corpora.asvspoof_protocol(self.data_root, split)  # layout checks, before any training
        if self.config.bonafide_dir:
            corpora.recording_groups(self.config.bonafide_dir, "task.bonafide_dir")  # missing or empty: stop now
        if self.config.bonafide_vctk:
            if self.data_root is None:
                raise ConfigError(
                    "task.bonafide_vctk needs --data-root (a folder holding VCTK-Corpus-0.92/ or VCTK-Corpus/)"
                )
            corpora.vctk_speakers(self.data_root)

    def width_slots(self) -> dict[str, int]:
        return {f"stage{i + 1}": max(1, round(w * self.config.width)) for i, w in enumerate(RESNET34_WIDTHS)}

    def build_model(self, widths: Mapping[str, int] | None = None) -> nn.Module:
        w = self.resolve_widths(widths)
        c = self.config
        return ResNetSpoof(
            tuple(w[f"stage{i}"] for i in range(1, 5)), front=c.front_end, max_hz=c.max_hz, n_ceps=c.n_ceps
        )

    # --- data ----------------------------------------------------------------------------
    def build_split(self, split: str) -> dict[str, np.ndarray]:
        """Cached arrays: audio (int16), attack (index into names, -1 bona fide), names, n_seen."""
        c = self.config
        n_utt = _SIZES[self.scale][("train", "val", "test").index(split)]
        settings = {
            "version": spoof_data.GENERATOR_VERSION,
            "split": split,
            "source": c.source,
            "seed": c.data_seed,
            "clip_seconds": _SIZES[self.scale][3],
        }
        if c.source == "synthetic":
            settings.update(utterances=n_utt, seen=list(c.seen_attacks), unseen=list(c.unseen_attacks))
            settings.update(synthesis.voice_settings(synthesis.installed_voices()))  # {} without flite/festival
            recorded = self._recordings(split, n_utt)
            if recorded:  # only then, so caches made without recordings stay valid
                settings.update(
                    recorded_share=c.recorded_share,
                    recorded=[[str(p.resolve()), p.stat().st_size if p.is_file() else -1, sr] for p, sr in recorded],
                )
            return cached_arrays("antispoof", settings, lambda: self._synthetic(split, settings))
        settings.update(data_root=str(self.data_root.resolve()), files=_REAL_FILES[self.scale])
        return cached_arrays("antispoof", settings, lambda: self._asvspoof(split, settings))

    def _recordings(self, split: str, n_utt: int) -> list[tuple[Path, int | None]]:
        """The split's recorded bona fide candidates, (path, expected sample rate): speakers
        (sub-folders; VCTK speakers) or loose files disjoint between splits, at most
        `recorded_share` of the split's utterances, picked by `data_seed`."""
        c = self.config
        files: list[tuple[Path, int | None]] = []
        if c.bonafide_dir:
            groups = corpora.recording_groups(c.bonafide_dir, "task.bonafide_dir")
            files += [(p, None) for g in corpora.split_speakers(list(groups), split) for p in groups[g]]
        if c.bonafide_vctk:
            speakers = corpora.vctk_speakers(self.data_root)
            files += [(p, 48000) for g in corpora.split_speakers(list(speakers), split) for p in speakers[g]]
        limit = min(len(files), round(c.recorded_share * n_utt))
        if limit < len(files):
            keep = np.random.default_rng([c.data_seed, spoof_data.SPLIT_IDS[split]]).choice(
                len(files), limit, replace=False
            )
            files = [files[i] for i in sorted(keep)]
        return files

    def _synthetic(self, split: str, s: dict) -> dict[str, np.ndarray]:
        seen, unseen = list(self.config.seen_attacks), list(self.config.unseen_attacks)
        recorded = [(Path(p), sr) for p, _, sr in s.get("recorded", [])]  # exactly what the settings name
        voices = [tuple(v) for v in s.get("external_voices", [])]
        arrays = spoof_data.generate_split(
            split, s["utterances"] - len(recorded), s["clip_seconds"], s["seed"], seen, unseen, voices=voices
        )
        if recorded:  # bad files warned about and skipped; the synthetic part keeps its size
            good = corpora.usable_files(recorded, "recorded bona fide")
            rec = spoof_data.generate_recorded(split, good, s["clip_seconds"], s["seed"], seen, unseen)
            rec["utterance"] = rec["utterance"] + s["utterances"] - len(recorded)  # numbered after the synthetic ones
            parts = [a for a in (arrays, rec) if a]
            arrays = {k: np.concatenate([a[k] for a in parts]) for k in rec}
            arrays["recorded"] = np.concatenate([np.full(len(a["attack"]), a is rec, np.uint8) for a in parts])
        return {**arrays, "names": np.array(seen + unseen), "n_seen": np.array(len(seen))}

    def _asvspoof(self, split: str, s: dict) -> dict[str, np.ndarray]:
        entries = corpora.asvspoof_protocol(self.data_root, split)
        seen = sorted({e.system for e in corpora.asvspoof_protocol(self.data_root, "train") if not e.bonafide})
        if s["files"] and len(entries) > s["files"]:
            keep = np.random.default_rng(s["seed"]).choice(len(entries), s["files"], replace=False)
            entries = [entries[i] for i in sorted(keep)]
        by_path = {e.path: e for e in entries}
        loaded = corpora.load_usable([e.path for e in entries], 16000, "ASVspoof2019 LA")
        systems = sorted({by_path[p].system for p, _ in loaded if not by_path[p].bonafide})
        names = seen + [x for x in systems if x not in seen]
        n = int(s["clip_seconds"] * 16000)
        audio = np.stack([np.round(np.clip(_fit(x, n), -1, 1) * 32767).astype(np.int16) for _, x in loaded])
        attack = np.array([-1 if by_path[p].bonafide else names.index(by_path[p].system) for p, _ in loaded], np.int8)
        return {
            "audio": audio,
            "attack": attack,
            "utterance": np.arange(len(loaded), dtype=np.int32),
            "names": np.array(names),
            "n_seen": np.array(len(seen)),
        }

    def dataset(self, split: str) -> SpoofPairs:
        d = self.data(split)
        return SpoofPairs(d["audio"], d["attack"], d["utterance"])

    # --- training and evaluation -------------------------------------------------------------
    def loss(self, model: nn.Module, batch) -> torch.Tensor:
        wave, bonafide = batch  # (pairs, 2, samples), (pairs, 2)
        return nn.functional.binary_cross_entropy_with_logits(model(wave.flatten(0, 1)), bonafide.flatten())

    def evaluate(self, model: nn.Module, split: str = "test") -> Evaluation:
        d = self.data(split)
        scores = batched_outputs(model, d["audio"])
        attack, names, n_seen = d["attack"], [str(x) for x in d["names"]], int(d["n_seen"])
        bona = attack < 0

        def eer_against(spoofs: np.ndarray) -> float | None:
            sel = bona | spoofs
            return 100 * metrics.eer(scores[sel], bona[sel]) if spoofs.any() and bona.any() else None

        groups = {"seen": (attack >= 0) & (attack < n_seen), "unseen": attack >= n_seen}
        groups.update({f"attack_{name}": attack == i for i, name in enumerate(names)})
        breakdowns = {k: v for k, v in ((k, eer_against(sel)) for k, sel in groups.items()) if v is not None}
        return Evaluation(
            error=100 * metrics.eer(scores, bona), breakdowns=breakdowns, secondary={"auc": metrics.auc(scores, bona)}
        )


class SpoofPairs(Dataset):
    """Items ``(waves (2, samples) float32 in [-1, 1], targets (2,) = [0, 1])``: one per
    spoofed clip, with a bona fide partner -- the clip of the same utterance when the split
    has one (generated data: the spoof was made from it), else the bona fide clips in turn
    (ASVspoof: classes balanced). Indexing with a list of indices gives a whole batch."""

    batch_indexing = True

    def __init__(self, audio: np.ndarray, attack: np.ndarray, utterance: np.ndarray):
        bona = np.flatnonzero(attack < 0)
        spoofs = np.flatnonzero(attack >= 0)
        if not len(bona) or not len(spoofs):
            raise ValueError("pairs need bona fide and spoofed clips")
        own = {int(utterance[i]): int(i) for i in bona}
        partner = [own.get(int(utterance[s]), int(bona[k % len(bona)])) for k, s in enumerate(spoofs)]
        self.audio = torch.from_numpy(np.ascontiguousarray(audio))
        self.pairs = torch.from_numpy(np.stack([spoofs, np.array(partner, dtype=np.int64)], 1))
        self.targets = torch.tensor([0.0, 1.0])

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, i) -> tuple[torch.Tensor, torch.Tensor]:
        rows = self.pairs[i]
        return self.audio[rows].float() / 32768.0, self.targets.expand(rows.shape)


def _fit(x: np.ndarray, n: int) -> np.ndarray:
    """Centre crop or zero-pad to `n` samples."""
    if x.size >= n:
        start = (x.size - n) // 2
        return x[start : start + n]
    return np.pad(x, (0, n - x.size))
