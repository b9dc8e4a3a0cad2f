"""Voice activity detection: per 10 ms frame, is someone speaking? Error = frame-level EER (%).

Data (`task.source`): ``synthetic`` (default, no download: espeak-ng speech with silences
mixed with generated noise at -5..35 dB SNR, `tasks.speech.vad_data`) or ``vctk+esc50``
(VCTK speech mixed with ESC-50 noise the same way, from `--data-root`). Splits are
disjoint in voices/speakers, sentences and noise seeds (ESC-50 folds 1-3 / 4 / 5).

Models (`task.model`): ``crnn`` (slots n_mels, conv1, conv2, gru, head) or ``transformer``
(slots n_mels = model width, head_dim, ffn; 4 heads fixed), both on an 80-band log-mel
front end inside the model (`tasks.speech.vad_models`), so FLOP/s include it.
Evaluation: EER pooled over all test frames, per SNR range of the clip (breakdowns
``snr_lt5``, ``snr_5_15``, ``snr_15_25``, ``snr_ge25``) and the AUC (secondary).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from bench.config import ConfigError, TrainRecipe
from bench.registry import register_task
from tasks.base import Evaluation
from tasks.speech import corpora, metrics, noise, synthesis, vad_data
from tasks.speech.cache import cached_arrays
from tasks.speech.datasets import AudioDataset, batched_outputs
from tasks.speech.streaming import StreamingCRNN
from tasks.speech.task import SpeechTask
from tasks.speech.vad_models import CRNN, TransformerVAD

# Clips per split (train, val, test) and clip length in seconds, per scale.
_SIZES = {"smoke": (24, 8, 16, 2.0), "small": (1600, 150, 300, 2.0), "full": (8000, 500, 2000, 4.0)}
# The recipe per scale and model family. Small: 32 clips a step rather than 16 (on one
# thread a CRNN step took 68 ms against 50 ms, and the val EER after as many clips matched).
# CRNN: the shortest measured to converge (benchmarks/convergence.py): the dense val EER
# falls 12-16 % per doubling up to 1920 steps, then 2.46 % (test) at 1920 against 2.52 % at
# 3840 (3 seeds). Transformer: 960 steps, 6.4 % off 1920's (seeds 0 and 1; 480 were 10.9 %
# off 960's). Converged VAD recipes are too long for the main job, which leaves VAD out.
_RECIPES = {
    "smoke": dict.fromkeys(("crnn", "transformer"), TrainRecipe(steps=20, batch_size=8, lr=3e-3)),
    "small": {
        "crnn": TrainRecipe(steps=1920, batch_size=32, lr=6e-3),
        "transformer": TrainRecipe(steps=960, batch_size=32, lr=6e-3),
    },
    "full": dict.fromkeys(("crnn", "transformer"), TrainRecipe(steps=4000, batch_size=32, lr=2e-3)),
}
# Real-corpus utterances read per split (0 = all), per scale.
_REAL_FILES = {"smoke": 40, "small": 1500, "full": 0}
SNR_BINS = {"snr_lt5": (-np.inf, 5.0), "snr_5_15": (5.0, 15.0), "snr_15_25": (15.0, 25.0), "snr_ge25": (25.0, np.inf)}
NOISE_KINDS = list(noise.NOISE_TYPES) + ["babble", "file"]


@dataclass(frozen=True)
class VadConfig:
    model: str = "crnn"  # crnn | transformer
    source: str = "synthetic"  # synthetic (generated here) | vctk+esc50 (real corpora under --data-root)
    n_mels: int = 80  # mel bands (for the transformer also its model width), full size as in the paper
    conv1: int = 64  # CRNN: channels of the first convolution
    conv2: int = 64  # CRNN: channels of the second convolution
    gru: int = 64  # CRNN: GRU hidden units
    head: int = 32  # CRNN: hidden units of the classifier
    heads: int = 4  # transformer: attention heads (fixed, not a slot)
    head_dim: int = 20  # transformer: features per head (slot head_dim)
    ffn: int = 160  # transformer: feed-forward hidden units
    layers: int = 2  # transformer: encoder layers
    snr_min: float = -5.0  # lowest mixture SNR in dB
    snr_max: float = 35.0  # highest mixture SNR in dB
    noise_dir: str = ""  # optional folder of .wav/.flac/.ogg noises added to the generated types
    data_seed: int = 1234  # fixes the generated data, the same for every method and run seed

    def validate(self) -> None:
        if self.model not in ("crnn", "transformer"):
            raise ValueError(f"model must be crnn or transformer, got {self.model!r}")
        if self.source not in ("synthetic", "vctk+esc50"):
            raise ValueError(f"source must be synthetic or vctk+esc50, got {self.source!r}")
        sizes = (
            self.n_mels,
            self.conv1,
            self.conv2,
            self.gru,
            self.head,
            self.heads,
            self.head_dim,
            self.ffn,
            self.layers,
        )
        if min(sizes) < 1:
            raise ValueError("all model sizes must be >= 1")
        if not self.snr_min < self.snr_max:
            raise ValueError(f"snr_min ({self.snr_min}) must be below snr_max ({self.snr_max})")


@register_task("vad")
class VadTask(SpeechTask):
    description = "voice activity detection per 10 ms frame (CRNN or transformer on log-mel); error = frame EER %"
    Config = VadConfig
    metric = "eer"
    metric_label = "EER (%)"
    metric_unit = "%"
    iso_tolerance = 0.5  # points of EER
    breakdown_label = "SNR range"
    chance_error = 50.0  # scores that ignore the input
    model_families = ("crnn", "transformer")
    in_default_suite = False
    left_out_because = "its converged recipes take about 1.5 h per model family and 3 seeds on 2 cores"

    def __init__(self, config=None, scale="small", data_root=None):
        super().__init__(config, scale, data_root)
        if self.config.source == "vctk+esc50":
            if self.data_root is None:
                raise ConfigError(
                    "task.source=vctk+esc50 needs --data-root (a folder holding VCTK-Corpus-0.92/ or VCTK-Corpus/ "
                    "and ESC-50-master/)"
                )
            corpora.vctk_speakers(self.data_root)  # layout checks, before any training
            corpora.esc50_files(self.data_root, "test")
        if self.config.noise_dir:
            noise.noise_files(self.config.noise_dir)

    def recipe(self) -> TrainRecipe:
        return _RECIPES[self.scale][self.config.model]

    # --- model family --------------------------------------------------------------------
    def width_slots(self) -> dict[str, int]:
        c = self.config
        if c.model == "crnn":
            return {"n_mels": c.n_mels, "conv1": c.conv1, "conv2": c.conv2, "gru": c.gru, "head": c.head}
        return {"n_mels": c.n_mels, "head_dim": c.head_dim, "ffn": c.ffn}

    def build_model(self, widths: Mapping[str, int] | None = None) -> nn.Module:
        w, c = self.resolve_widths(widths), self.config
        if c.model == "crnn":
            return CRNN(w["n_mels"], w["conv1"], w["conv2"], w["gru"], w["head"])
        return TransformerVAD(w["n_mels"], c.heads, w["head_dim"], w["ffn"], c.layers, full_head_dim=c.head_dim)

    def streamer(self, model: nn.Module) -> StreamingCRNN | None:
        # The transformer attends over the whole recording: no chunk scores what offline would.
        return StreamingCRNN(model) if isinstance(model, CRNN) else None

    # --- data ----------------------------------------------------------------------------
    def build_split(self, split: str) -> dict[str, np.ndarray]:
        """Cached arrays of a split: audio (int16), labels (uint8 per frame), snr, noise."""
        settings = self._settings(split)
        return cached_arrays("vad", settings, lambda: self._generate(split, settings))

    def _settings(self, split: str) -> dict:
        c = self.config
        sizes = _SIZES[self.scale]
        settings = {
            "version": vad_data.GENERATOR_VERSION,
            "split": split,
            "clips": sizes[("train", "val", "test").index(split)],
            "clip_seconds": sizes[3],
            "seed": c.data_seed,
            "snr": [c.snr_min, c.snr_max],
            "source": c.source,
        }
        if c.noise_dir:
            files = noise.noise_files(c.noise_dir)
            settings["noise_files"] = [[str(p), p.stat().st_size] for p in files]
        if c.source == "vctk+esc50":
            settings["data_root"] = str(self.data_root.resolve())
            settings["real_files"] = _REAL_FILES[self.scale]
        else:  # flite/festival voices when installed (nothing added without them)
            settings.update(synthesis.voice_settings(synthesis.installed_voices()))
        return settings

    def _generate(self, split: str, settings: dict) -> dict[str, np.ndarray]:
        c = self.config
        snr = (c.snr_min, c.snr_max)
        n, seconds = settings["clips"], settings["clip_seconds"]
        if c.source == "vctk+esc50":  # no synthesis: deterministic in this process
            utterance, noise_source = self._real_sources(split)
            return vad_data.generate_clips(
                0, n, split, seconds, c.data_seed, snr, utterance, noise_source, NOISE_KINDS, progress=True
            )
        kinds, clips = list(noise.NOISE_TYPES) + ["babble"], None
        if c.noise_dir:
            loaded = corpora.load_usable(noise.noise_files(c.noise_dir), None, "noise")
            clips, kinds = [x for _, x in loaded], kinds + ["file"]
        voices = [tuple(v) for v in settings.get("external_voices", [])]  # exactly those the settings name
        return vad_data.generate_synthetic(
            split, n, seconds, c.data_seed, snr, kinds, clips, NOISE_KINDS, voices=voices
        )

    def _real_sources(self, split: str):
        speakers = corpora.vctk_speakers(self.data_root)
        chosen = corpora.split_speakers(list(speakers), split) or sorted(speakers)[:1]
        files = sorted(p for s in chosen for p in speakers[s])
        limit = _REAL_FILES[self.scale]
        if limit and len(files) > limit:
            rng = np.random.default_rng(self.config.data_seed)
            files = sorted(rng.choice(np.array(files, dtype=object), limit, replace=False).tolist())
        speech = [x for _, x in corpora.load_usable(files, 48000, "VCTK speech")]
        noises = [x for _, x in corpora.load_usable(corpora.esc50_files(self.data_root, split), 44100, "ESC-50 noise")]
        if not noises:
            raise ConfigError(f"ESC-50 has no clips for the {split} split (folds {sorted(corpora.ESC50_FOLDS[split])})")
        return vad_data.pool_sources(speech, noises)

    def dataset(self, split: str) -> AudioDataset:
        d = self.data(split)
        return AudioDataset(d["audio"], d["labels"])

    # --- training and evaluation -------------------------------------------------------------
    def loss(self, model: nn.Module, batch) -> torch.Tensor:
        wave, labels = batch
        return nn.functional.binary_cross_entropy_with_logits(model(wave), labels)

    def evaluate(self, model: nn.Module, split: str = "test") -> Evaluation:
        d = self.data(split)
        scores = batched_outputs(model, d["audio"])
        labels = d["labels"]
        if scores.shape != labels.shape:
            raise ValueError(f"model gave {scores.shape} frame scores for labels of shape {labels.shape}")
        snr = np.repeat(d["snr"][:, None], labels.shape[1], axis=1)
        breakdowns = {}
        for name, (lo, hi) in SNR_BINS.items():
            sel = (snr >= lo) & (snr < hi)
            if labels[sel].any() and not labels[sel].all():
                breakdowns[name] = 100 * metrics.eer(scores[sel], labels[sel])
        return Evaluation(
            error=100 * metrics.eer(scores, labels),
            breakdowns=breakdowns,
            secondary={"auc": metrics.auc(scores, labels)},
        )
