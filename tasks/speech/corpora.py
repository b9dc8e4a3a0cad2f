"""Loaders for real corpora in their published layouts under `--data-root`.

- VCTK 0.92 (``VCTK-Corpus-0.92/wav48_silence_trimmed/pNNN/pNNN_MMM_mic1.flac``) or 0.80
  (``VCTK-Corpus/wav48/pNNN/pNNN_MMM.wav``), 48 kHz: speech for `vad` (source vctk+esc50).
- ESC-50 (``ESC-50-master/meta/esc50.csv`` + ``audio/*.wav``, 44.1 kHz): noise for `vad`.
- ASVspoof2019 LA (``LA/ASVspoof2019_LA_cm_protocols/ASVspoof2019.LA.cm.*.txt`` +
  ``LA/ASVspoof2019_LA_{train,dev,eval}/flac/*.flac``, 16 kHz): `antispoof`.
- A user's own recordings (any folder of .wav/.flac/.ogg, `recording_groups`): recorded
  bona fide speech for `antispoof`.

A wrong layout or a missing or malformed protocol/metadata file is a setup error
(`ConfigError`, one line naming the path and what was expected). A single bad audio file
(unreadable, empty, wrong sample rate, missing) is reported with a warning naming it and
what was expected, and skipped; if nothing usable is left, that is a `ConfigError`.
"""

from __future__ import annotations

import csv
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bench.config import ConfigError

TARGET_SR = 16000


class AudioError(ValueError):
    """One audio file that cannot be used; the message names the file and the problem."""


def read_audio(path: Path, expected_sr: int | None) -> np.ndarray:
    """Mono float32 at 16 kHz from a non-empty file at `expected_sr` Hz (None: any rate)."""
    import soundfile as sf
    from scipy.signal import resample_poly

    if not path.is_file():
        raise AudioError(f"{path}: file not found")
    try:
        data, sr = sf.read(str(path), dtype="float32", always_2d=True)
    except Exception as err:  # soundfile raises LibsndfileError / RuntimeError / TypeError
        detail = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        want = f"a {expected_sr} Hz audio file" if expected_sr else "an audio file (wav, flac, ogg)"
        raise AudioError(f"{path}: unreadable or corrupt audio ({detail}); expected {want}") from None
    if expected_sr is not None and sr != expected_sr:
        raise AudioError(f"{path}: sample rate {sr} Hz, expected {expected_sr} Hz")
    if data.shape[0] == 0:
        raise AudioError(f"{path}: empty audio file (0 samples)")
    x = data.mean(axis=1)
    if sr != TARGET_SR:
        g = np.gcd(sr, TARGET_SR)
        x = resample_poly(x, TARGET_SR // g, sr // g)
    return x.astype(np.float32)


def load_usable(paths: list[Path], expected_sr: int | None, what: str) -> list[tuple[Path, np.ndarray]]:
    """Read every file; warn about and skip bad ones; ConfigError if none is usable."""
    good, bad = [], []
    for path in paths:
        try:
            good.append((path, read_audio(path, expected_sr)))
        except AudioError as err:
            bad.append(str(err))
            warnings.warn(f"skipping {what} file: {err}", stacklevel=2)
    if paths and not good:
        raise ConfigError(f"no usable {what} audio among {len(paths)} files (first problem: {bad[0]})")
    return good


def usable_files(files: list[tuple[Path, int | None]], what: str) -> list[tuple[Path, int | None]]:
    """`load_usable` without keeping the audio (there may be thousands): the (path, expected
    rate) pairs that read well; bad ones warned about and skipped; ConfigError if none is left."""
    good, first_bad = [], None
    for path, expected_sr in files:
        try:
            read_audio(path, expected_sr)
            good.append((path, expected_sr))
        except AudioError as err:
            first_bad = first_bad or str(err)
            warnings.warn(f"skipping {what} file: {err}", stacklevel=2)
    if files and not good:
        raise ConfigError(f"no usable {what} audio among {len(files)} files (first problem: {first_bad})")
    return good


def _find(root: Path, names: list[str], what: str, expected: str) -> Path:
    for name in names:
        for base in (root, root.parent):
            if (base / name).is_dir():
                return base / name
    raise ConfigError(f"{what} not found under {root}: expected {expected}")


# --- VCTK ---------------------------------------------------------------------------
def vctk_speakers(data_root: Path) -> dict[str, list[Path]]:
    """Speaker id -> sorted audio files (0.92: mic1 flac; 0.80: wav)."""
    expected = "VCTK-Corpus-0.92/wav48_silence_trimmed/p225/p225_001_mic1.flac or VCTK-Corpus/wav48/p225/p225_001.wav"
    for corpus, sub, pattern in (
        ("VCTK-Corpus-0.92", "wav48_silence_trimmed", "*_mic1.flac"),
        ("VCTK-Corpus", "wav48", "*.wav"),
    ):
        base = data_root / corpus / sub
        if base.is_dir():
            speakers = {d.name: sorted(d.glob(pattern)) for d in sorted(base.iterdir()) if d.is_dir()}
            speakers = {k: v for k, v in speakers.items() if v}
            if not speakers:
                raise ConfigError(
                    f"VCTK folder {base} has no speaker folders with {pattern} files (expected {expected})"
                )
            return speakers
    raise ConfigError(f"VCTK not found under {data_root}: expected {expected}")


def split_speakers(speakers: list[str], split: str) -> list[str]:
    """Disjoint speakers: every 5th (sorted) to test, every 5th shifted by 1 to val, rest train."""
    ordered = sorted(speakers)
    pick = {"test": lambda i: i % 5 == 0, "val": lambda i: i % 5 == 1, "train": lambda i: i % 5 > 1}[split]
    return [s for i, s in enumerate(ordered) if pick(i)]


# --- ESC-50 -------------------------------------------------------------------------
ESC50_HEADER = ["filename", "fold", "target", "category", "esc10", "src_file", "take"]
ESC50_FOLDS = {"train": {1, 2, 3}, "val": {4}, "test": {5}}


def esc50_files(data_root: Path, split: str) -> list[Path]:
    """Clips of the split's folds (1-3 train, 4 val, 5 test), from meta/esc50.csv."""
    base = data_root / "ESC-50-master"
    meta = base / "meta" / "esc50.csv"
    if not meta.is_file():
        raise ConfigError(
            f"ESC-50 metadata not found: expected {meta} (ESC-50-master/meta/esc50.csv with audio/ beside meta/)"
        )
    with meta.open(newline="") as f:
        rows = list(csv.reader(f))
    if not rows or [h.strip() for h in rows[0]] != ESC50_HEADER:
        raise ConfigError(f"{meta}: header {rows[0] if rows else '(empty file)'}; expected {','.join(ESC50_HEADER)}")
    files = []
    for n, row in enumerate(rows[1:], start=2):
        if len(row) != len(ESC50_HEADER) or not row[1].strip().isdigit():
            raise ConfigError(
                f"{meta} line {n}: expected 7 fields like 1-100032-A-0.wav,1,0,dog,True,100032,A; got {','.join(row)!r}"
            )
        if int(row[1]) in ESC50_FOLDS[split]:
            files.append(base / "audio" / row[0])
    return files


# --- ASVspoof2019 LA ----------------------------------------------------------------
ASV_PROTOCOLS = {"train": ("train", "trn", "T"), "val": ("dev", "trl", "D"), "test": ("eval", "trl", "E")}


@dataclass(frozen=True)
class ProtocolEntry:
    speaker: str
    utterance: str
    system: str  # "-" for bona fide, A01..A19 for spoofs
    bonafide: bool
    path: Path


def asvspoof_protocol(data_root: Path, split: str) -> list[ProtocolEntry]:
    """Entries of the LA countermeasure protocol of `split` (train/dev/eval for train/val/test)."""
    la = data_root / "LA" if (data_root / "LA").is_dir() else data_root
    part, ext, _ = ASV_PROTOCOLS[split]
    proto = la / "ASVspoof2019_LA_cm_protocols" / f"ASVspoof2019.LA.cm.{part}.{ext}.txt"
    if not proto.is_file():
        raise ConfigError(
            f"ASVspoof2019 LA protocol not found: expected {proto} (LA/ASVspoof2019_LA_cm_protocols/; "
            f"ASVspoof2019_LA_asv_protocols holds speaker-verification lists, not these)"
        )
    audio_dir = la / f"ASVspoof2019_LA_{part}" / "flac"
    if not audio_dir.is_dir():
        raise ConfigError(f"ASVspoof2019 LA audio folder not found: expected {audio_dir}")
    entries = []
    for n, line in enumerate(proto.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        fields = line.split()
        if len(fields) != 5 or fields[4] not in ("bonafide", "spoof"):
            raise ConfigError(
                f"{proto} line {n}: expected 5 fields 'SPEAKER_ID AUDIO_FILE - SYSTEM_ID KEY' "
                f"(KEY bonafide or spoof), e.g. 'LA_0079 LA_T_1271820 - A01 spoof'; got {line.strip()!r}"
            )
        speaker, utt, _, system, key = fields
        entries.append(ProtocolEntry(speaker, utt, system, key == "bonafide", audio_dir / f"{utt}.flac"))
    if not entries:
        raise ConfigError(f"{proto} is empty: expected one line per utterance")
    return entries


# --- a user's own recordings -------------------------------------------------------------
RECORDING_SUFFIXES = (".wav", ".flac", ".ogg")


def recording_groups(directory: str | Path, what: str = "recordings folder") -> dict[str, list[Path]]:
    """Group -> sorted recordings under `directory`: a sub-folder's files are one group (a
    speaker, kept within one split), a file directly in `directory` is a group of its own."""
    root = Path(directory)
    if not root.is_dir():
        raise ConfigError(f"{what} {root} does not exist (expected a folder of .wav/.flac/.ogg recordings)")
    files = sorted(p for p in root.rglob("*") if p.suffix.lower() in RECORDING_SUFFIXES and p.is_file())
    if not files:
        raise ConfigError(f"{what} {root} holds no .wav/.flac/.ogg recordings")
    groups: dict[str, list[Path]] = {}
    for path in files:
        parts = path.relative_to(root).parts
        groups.setdefault(parts[0], []).append(path)  # the sub-folder, or the file itself
    return groups
