"""Speech that needs no download: espeak-ng (PyPI `espeakng-loader`) through ctypes.

`Synthesizer.say(text, voice)` returns float32 samples at 16 kHz (espeak-ng renders at
22.05 kHz; we resample with a polyphase filter). Silence before and after an utterance is
digital zero, so frame labels taken from the clean signal are exact. Note: espeak-ng keeps
state between calls (pitch flutter, noise), so repeating a call in one process gives
slightly different audio; reproducible data are made in fresh processes (`shards`).
`sentences(rng, n)` makes varied English text from a small grammar; `voice_pool(split)` gives disjoint voices
(accent x variant) for training and evaluation.

Debian's `flite` and festival's `text2wave`, when installed, add their voices
(`installed_voices`): `random_voice` then takes one of the split's in `EXTERNAL_SHARE` of
the draws. They are split by speaker (flite's kal and kal16 are one speaker), run as one
process per utterance (both are deterministic) and resampled to 16 kHz. Without them
nothing changes: same draws, same audio, same cache settings (`voice_settings`).
"""

from __future__ import annotations

import ctypes
import functools
import re
import shutil
import subprocess
import tempfile
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

SAMPLE_RATE = 16000
_ESPEAK_RATE = 22050
_AUDIO_OUTPUT_SYNCHRONOUS = 2
_ESPEAK_CHARS_AUTO = 0
_POS_CHARACTER = 1
# espeak_PARAMETER: espeakRATE=1, espeakVOLUME=2, espeakPITCH=3, espeakRANGE=4
_RATE, _VOLUME, _PITCH, _RANGE = 1, 2, 3, 4

_CALLBACK = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p)

# English accents shipped with espeak-ng, and its voice variants. Voices are split by
# (accent, variant) so no voice used in training is heard in evaluation.
ACCENTS = ["en-us", "en", "en-gb-scotland", "en-gb-x-rp", "en-029", "en-gb-x-gbclan", "en-gb-x-gbcwmd"]
# Variants f2, f3, f5 and victor are left out: their breath noise differs from run to run
# even in a fresh process, which would make the data irreproducible.
VARIANTS = [
    "m1",
    "m2",
    "m3",
    "m4",
    "m5",
    "m6",
    "m7",
    "m8",
    "f1",
    "f4",
    "klatt",
    "klatt2",
    "klatt3",
    "linda",
    "steph",
    "belinda",
    "aunty",
    "alicia",
    "anika",
    "max",
    "edward",
    "john",
    "quincy",
    "zac",
    "travis",
    "rob",
]


@dataclass(frozen=True)
class Voice:
    accent: str
    variant: str
    rate: int = 170  # words per minute
    pitch: int = 50  # 0..100
    pitch_range: int = 50  # 0..100 (espeak-ng only)
    engine: str = "espeak-ng"  # espeak-ng | flite | festival (then `variant` is the engine's voice name)

    @property
    def name(self) -> str:
        return f"{self.accent}+{self.variant}" if self.engine == "espeak-ng" else f"{self.engine}:{self.variant}"


def voice_pool(split: str) -> list[tuple[str, str]]:
    """(accent, variant) pairs of a split; train, val and test are disjoint."""
    pairs = [(a, v) for a in ACCENTS for v in VARIANTS]
    rng = np.random.default_rng(7)
    order = rng.permutation(len(pairs))
    n = len(pairs)
    cut = {"train": (0, int(0.7 * n)), "val": (int(0.7 * n), int(0.8 * n)), "test": (int(0.8 * n), n)}[split]
    return [pairs[i] for i in order[cut[0] : cut[1]]]


def random_voice(rng: np.random.Generator, split: str, external: Sequence[tuple[str, str]] = ()) -> Voice:
    """A voice of `split` at a random rate and pitch; in `EXTERNAL_SHARE` of the draws one of
    the split's `external` (engine, voice) pairs instead, when it has any."""
    accent, variant = voice_pool(split)[rng.integers(len(voice_pool(split)))]
    voice = Voice(
        accent,
        variant,
        rate=int(rng.integers(120, 220)),
        pitch=int(rng.integers(20, 80)),
        pitch_range=int(rng.integers(20, 90)),
    )
    mine = external_pool(split, external)
    # drawn after the espeak-ng voice, so without external voices the stream is as before
    if mine and rng.random() < EXTERNAL_SHARE:
        engine, name = mine[rng.integers(len(mine))]
        voice = Voice("", name, rate=voice.rate, engine=engine)
    return voice


# --- flite and festival, when installed ----------------------------------------------------
EXTERNAL_SHARE = 0.25  # share of utterances spoken by a flite/festival voice when the split has one
# Name parts that say how a voice was built, not who speaks (cmu_us_slt_arctic_hts -> slt).
_NOT_SPEAKER = {
    "cmu",
    "us",
    "uk",
    "en",
    "nitech",
    "diphone",
    "hts",
    "arctic",
    "clunits",
    "cg",
    "multisyn",
    "ldom",
    "lpc",
    "mbrola",
}


def installed_voices() -> list[tuple[str, str]]:
    """(engine, voice) pairs of flite and festival voices found on PATH, sorted; [] if neither."""
    flite = _flite_voices(shutil.which("flite"))
    festival = _festival_voices(shutil.which("festival"), shutil.which("text2wave"))
    return sorted(flite + festival)


def voice_speaker(voice: str) -> str:
    """Who speaks a flite/festival voice: kal16 and kal_diphone are both 'kal'."""
    parts = [p for p in re.split(r"[_\-\d]+", voice.lower()) if p and p not in _NOT_SPEAKER]
    return parts[0] if parts else voice


def external_pool(split: str, voices: Sequence[tuple[str, str]]) -> list[tuple[str, str]]:
    """The split's share of `voices`, disjoint by speaker: of the sorted speakers every 5th goes
    to test, the next to val, the rest to train (`corpora.split_speakers`)."""
    if not voices:
        return []
    from tasks.speech.corpora import split_speakers

    chosen = set(split_speakers(sorted({voice_speaker(v) for _, v in voices}), split))
    return [(e, v) for e, v in voices if voice_speaker(v) in chosen]


def voice_settings(voices: Sequence[tuple[str, str]]) -> dict:
    """What cache settings must hold about `voices`: nothing for espeak-ng alone (so existing
    caches stay valid), else the engines, their versions and the voices."""
    if not voices:
        return {}
    engines = sorted({e for e, _ in voices})
    return {
        "engines": ["espeak-ng", *engines],
        "engine_versions": {e: _engine_version(e) for e in engines},
        "external_voices": [list(v) for v in voices],
        "external_share": EXTERNAL_SHARE,
    }


def _run(cmd: list[str], stdin: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, input=stdin, capture_output=True, text=True, timeout=120)


@functools.cache
def _flite_voices(binary: str | None) -> list[tuple[str, str]]:
    if binary is None:
        return []
    try:  # prints "Voices available: kal awb_time kal16 awb rms slt"
        listed = _run([binary, "-lv"]).stdout.split(":", 1)[-1].split()
    except (OSError, subprocess.SubprocessError):
        return []
    return [("flite", v) for v in listed if not v.endswith("_time")]  # *_time voices can only tell the time


@functools.cache
def _festival_voices(festival: str | None, text2wave: str | None) -> list[tuple[str, str]]:
    if festival is None or text2wave is None:
        return []
    try:  # prints e.g. "(kal_diphone)"
        out = _run([festival, "--pipe"], "(print (voice.list))\n").stdout
    except (OSError, subprocess.SubprocessError):
        return []
    found = re.search(r"\(([^()]*)\)", out)
    return [("festival", v) for v in (found.group(1).split() if found else [])]


@functools.cache
def _engine_version(engine: str) -> str:
    binary = shutil.which("flite" if engine == "flite" else "festival")
    try:
        out = _run([binary, "--version"]) if binary else None
    except (OSError, subprocess.SubprocessError):
        out = None
    found = (
        re.search(r"\d+\.\d+(?:\.\d+)?", out.stdout + out.stderr) if out else None
    )  # "flite-2.2-current", "2.5.0:release"
    return found.group(0) if found else "unknown"


def say_external(text: str, voice: Voice) -> np.ndarray:
    """float32 samples at 16 kHz from flite or festival (text2wave); RuntimeError naming the
    voice if the engine fails (never a silent fallback: the data must be what settings say)."""
    import soundfile as sf
    from scipy.signal import resample_poly

    stretch = f"{170 / voice.rate:.3f}"  # espeak-ng's words per minute as a duration factor
    with tempfile.TemporaryDirectory(prefix="tts-") as tmp:
        out = Path(tmp) / "say.wav"
        if voice.engine == "flite":
            cmd = [
                shutil.which("flite") or "flite",
                "-voice",
                voice.variant,
                "--setf",
                f"duration_stretch={stretch}",
                "-t",
                text,
                "-o",
                str(out),
            ]
            stdin = None
        elif voice.engine == "festival":
            cmd = [
                shutil.which("text2wave") or "text2wave",
                "-eval",
                f"(voice_{voice.variant})",
                "-eval",
                f"(Parameter.set 'Duration_Stretch {stretch})",
                "-o",
                str(out),
            ]
            stdin = text
        else:
            raise ValueError(f"unknown speech engine {voice.engine!r}")
        try:
            done = _run(cmd, stdin)
        except (OSError, subprocess.SubprocessError) as err:  # not runnable, or timed out
            raise RuntimeError(f"{voice.name} failed on {text!r}: {err}") from None
        said = done.stderr.strip()[:200]
        if done.returncode != 0:
            raise RuntimeError(f"{voice.name} failed on {text!r} (exit {done.returncode}): {said}")
        try:  # festival exits 0 even when it wrote nothing (e.g. an unknown voice)
            data, sr = sf.read(str(out), dtype="float32", always_2d=True)
        except Exception:  # soundfile raises LibsndfileError / RuntimeError
            raise RuntimeError(f"{voice.name} failed on {text!r}: no readable wav written; it said {said!r}") from None
    g = np.gcd(sr, SAMPLE_RATE)
    x = data.mean(axis=1)
    return (resample_poly(x, SAMPLE_RATE // g, sr // g) if sr != SAMPLE_RATE else x).astype(np.float32)


_SUBJECTS = (
    "the old man|a little girl|my neighbour|the teacher|our team|the doctor|every student|the driver|a "
    "stranger|the children|her brother|the council|nobody|the pilot|a young farmer"
).split("|")
_VERBS = (
    "found|carried|painted|watched|forgot|bought|cleaned|opened|borrowed|described|repaired|followed|ignored|"
    "measured|delivered"
).split("|")
_OBJECTS = (
    "the red box|a broken window|seven apples|the morning paper|an old guitar|the kitchen table|a long "
    "letter|the village road|two heavy bags|the blue car|a quiet garden|the last train|some fresh bread|the map|"
    "a silver coin"
).split("|")
_TAILS = (
    "yesterday|before lunch|in the rain|after the meeting|without a word|last summer|near the river|on "
    "Monday|very slowly|at midnight|again|with great care|for an hour|by the station|this morning"
).split("|")
_QUESTIONS = "did you see|where is|why would anyone want|who remembers|how many people saw".split("|")


def sentences(rng: np.random.Generator, n: int) -> list[str]:
    """`n` random sentences (statements, questions, lists of numbers) from a small grammar."""
    out = []
    for _ in range(n):
        kind = rng.integers(5)
        pick = lambda words: words[rng.integers(len(words))]  # noqa: E731
        if kind == 0:
            out.append(f"{pick(_QUESTIONS)} {pick(_OBJECTS)}?")
        elif kind == 1:
            out.append(", ".join(str(int(x)) for x in rng.integers(0, 1000, size=rng.integers(2, 5))) + ".")
        else:
            s = f"{pick(_SUBJECTS)} {pick(_VERBS)} {pick(_OBJECTS)} {pick(_TAILS)}"
            if kind == 4:
                s += f", and {pick(_SUBJECTS)} {pick(_VERBS)} {pick(_OBJECTS)}"
            out.append(s[0].upper() + s[1:] + ".")
    return out


class Synthesizer:
    """One espeak-ng instance (the library is global state: use through this object only)."""

    _lock = threading.Lock()
    _lib = None

    def __init__(self) -> None:
        with Synthesizer._lock:
            if Synthesizer._lib is None:
                Synthesizer._lib = self._load()
        self._lib = Synthesizer._lib
        self._chunks: list[np.ndarray] = []

        def collect(wav, n, events):  # espeak's synth callback: n samples at wav
            if n > 0:
                self._chunks.append(np.ctypeslib.as_array(wav, shape=(n,)).copy())
            return 0

        self._callback = _CALLBACK(collect)  # keep a reference: ctypes does not

    @staticmethod
    def _load():
        try:
            import espeakng_loader
        except ImportError as err:  # pragma: no cover - a declared dependency
            raise RuntimeError(
                "speech synthesis needs the package espeakng-loader (pip install espeakng-loader)"
            ) from err
        lib = ctypes.cdll.LoadLibrary(str(espeakng_loader.get_library_path()))
        ctypes.CDLL(None).srand(1)  # espeak-ng's noise uses libc rand(): a fixed start per process
        data = str(espeakng_loader.get_data_path()).encode()
        lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
        rate = lib.espeak_Initialize(_AUDIO_OUTPUT_SYNCHRONOUS, 0, data, 0)
        if rate != _ESPEAK_RATE:
            raise RuntimeError(
                f"espeak-ng initialisation failed (returned {rate}, expected sample rate {_ESPEAK_RATE})"
            )
        lib.espeak_SetSynthCallback.argtypes = [_CALLBACK]
        lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
        lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
        lib.espeak_Synth.argtypes = [
            ctypes.c_void_p,
            ctypes.c_size_t,
            ctypes.c_uint,
            ctypes.c_int,
            ctypes.c_uint,
            ctypes.c_uint,
            ctypes.c_void_p,
            ctypes.c_void_p,
        ]
        return lib

    def say(self, text: str, voice: Voice) -> np.ndarray:
        """float32 samples in [-1, 1] at 16 kHz, leading and trailing silence trimmed."""
        from scipy.signal import resample_poly

        if voice.engine != "espeak-ng":
            return _trim(say_external(text, voice))
        with Synthesizer._lock:
            lib = self._lib
            lib.espeak_SetSynthCallback(self._callback)
            if lib.espeak_SetVoiceByName(voice.name.encode()) != 0:
                raise RuntimeError(f"espeak-ng has no voice {voice.name!r}")
            lib.espeak_SetParameter(_RATE, voice.rate, 0)
            lib.espeak_SetParameter(_PITCH, voice.pitch, 0)
            lib.espeak_SetParameter(_RANGE, voice.pitch_range, 0)
            self._chunks = []
            buf = text.encode() + b"\0"
            lib.espeak_Synth(buf, len(buf), 0, _POS_CHARACTER, 0, _ESPEAK_CHARS_AUTO, None, None)
            lib.espeak_Synchronize()
            chunks, self._chunks = self._chunks, []
        wav = np.concatenate(chunks).astype(np.float32) / 32768.0 if chunks else np.zeros(0, np.float32)
        return _trim(resample_poly(wav, 320, 441).astype(np.float32))  # 22050 -> 16000


def _trim(wav: np.ndarray) -> np.ndarray:
    nonzero = np.flatnonzero(np.abs(wav) > 1e-4)
    return wav[nonzero[0] : nonzero[-1] + 1] if nonzero.size else wav[:0]
