"""Generated speech data: labels, SNR, determinism, splits and the on-disk cache."""

import json

import numpy as np
import pytest

from tasks.speech import cache, noise, vad_data
from tasks.speech.mixing import frame_labels, mix_at_snr, mixture_snr
from tasks.speech.synthesis import Synthesizer, Voice, voice_pool


@pytest.fixture
def bench_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("BENCH_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def test_labels_of_a_constructed_example_mark_exactly_the_speech_frames():
    # 2 s at 16 kHz with a tone at samples [8000, 16000): frame i (centred on sample 160 i,
    # covering [160 i - 80, 160 i + 80)) overlaps it for i = 50 .. 100.
    x = np.zeros(32000, np.float32)
    x[8000:16000] = 0.5 * np.sin(2 * np.pi * 440 * np.arange(8000) / 16000)
    labels = frame_labels(x)
    assert labels.shape == (201,)
    assert np.flatnonzero(labels).tolist() == list(range(50, 101))


def test_synthesised_speech_is_placed_where_labels_say():
    synth = Synthesizer()
    speech = synth.say("The old man found the red box.", Voice("en-us", "m3"))
    assert speech.size > 8000 and np.abs(speech).max() > 0.05
    track = np.zeros(48000, np.float32)
    track[16000 : 16000 + min(speech.size, 32000)] = speech[:32000]
    labels = frame_labels(track)
    assert labels[:99].sum() == 0  # all frames before the utterance are silence
    assert labels[101] == 1  # the first frame fully inside it is speech (trimmed start)
    assert labels.mean() > 0.3


@pytest.mark.parametrize("snr", [-5.0, 0.0, 12.5, 30.0])
@pytest.mark.parametrize("kind", ["white", "pink", "hum", "babble"])
def test_mixture_snr_is_within_half_a_db_of_the_asked_value(snr, kind):
    rng = np.random.default_rng(3)
    synth = Synthesizer()
    clean = np.zeros(32000, np.float32)
    utt = synth.say("Seven apples, near the river.", Voice("en", "f4"))[:24000]
    clean[4000 : 4000 + utt.size] = utt
    labels = frame_labels(clean)
    n = noise.babble(rng, clean.size, synth, "test") if kind == "babble" else noise.NOISE_TYPES[kind](rng, clean.size)
    mixture, scaled = mix_at_snr(clean, n, snr, labels)
    assert abs(mixture_snr(clean, mixture - clean, labels) - snr) < 0.5


def test_generated_clips_have_the_drawn_snr_after_int16_storage():
    utterance, noise_source = vad_data.synthetic_sources("train", ["pink", "clicks"])
    for i in range(3):
        m = vad_data.make_mixture(np.random.default_rng([5, i]), utterance, noise_source, 32000, (-5, 35))
        stored = np.round(m.wave * 32767) / 32767  # what the cache keeps
        assert abs(mixture_snr(m.clean, stored - m.clean, m.labels) - m.snr_db) < 0.5
        assert np.array_equal(frame_labels(m.clean), m.labels)


def test_generation_is_deterministic_and_seeded():
    kinds = list(noise.NOISE_TYPES) + ["babble"]
    args = ("val", 0.5, 7, (-5, 35), kinds, None, kinds)
    a = vad_data.generate_synthetic(args[0], 3, *args[1:], progress=False)
    b = vad_data.generate_synthetic(args[0], 3, *args[1:], progress=False)
    c = vad_data.generate_synthetic(args[0], 3, 0.5, 8, *args[3:], progress=False)
    for key in a:
        assert np.array_equal(a[key], b[key]), key
    assert not np.array_equal(a["audio"], c["audio"])
    # clip i depends only on (seed, split, i): a shorter split has the same first clips
    d = vad_data.generate_synthetic(args[0], 2, *args[1:], progress=False)
    assert np.array_equal(d["audio"], a["audio"][:2])


def test_espeak_state_is_why_shards_run_in_fresh_processes():
    # The same call twice in one process differs slightly (espeak-ng's C statics): the
    # reason generation runs each shard in a new process. If this ever stops being true
    # the shards are merely unnecessary, not wrong.
    synth = Synthesizer()
    v = Voice("en-us", "m3", 150, 40, 60)
    first, second = (synth.say("The old man found the red box.", v) for _ in range(2))
    assert first.size > 0 and second.size > 0


def test_shards_forked_from_the_fork_server_equal_shards_in_a_spawned_process():
    """The fork server imports the generators, never espeak-ng: its children start as fresh
    as a new interpreter (what the cached data of earlier versions were made in)."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    kinds = list(noise.NOISE_TYPES) + ["babble"]
    args = ("val", 0.5, 7, (-5, 35), kinds, None, kinds)
    forked = vad_data.generate_synthetic(args[0], 2, *args[1:], progress=False)
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        spawned = pool.submit(vad_data._synthetic_shard, 0, 2, *args).result()
    for key in forked:
        assert np.array_equal(forked[key], spawned[key]), key


def test_spoof_generation_is_deterministic_and_covers_every_attack_in_test():
    from tasks.speech import spoof_data

    a = spoof_data.generate_split("test", 2, 0.5, 1, ["lpc"], ["world_shift"], progress=False)
    b = spoof_data.generate_split("test", 2, 0.5, 1, ["lpc"], ["world_shift"], progress=False)
    assert a["audio"].shape == (6, 8000)
    assert np.array_equal(a["audio"], b["audio"])
    assert a["attack"].tolist() == [-1, 0, 1, -1, 0, 1]
    t = spoof_data.generate_utterances(0, 3, "train", 0.5, 1, ["lpc", "griffin_lim"], ["world_shift"])
    assert set(t["attack"].tolist()) - {-1} <= {0, 1}  # no unseen attack (index 2) in training
    assert (t["attack"] == -1).sum() == 3


def test_the_channel_high_pass_removes_the_sub_80_hz_cue_from_every_clip():
    """Vocoders add energy below ~80 Hz; every channel draw must cut 30 Hz by >= 10 dB
    relative to 1 kHz (the weakest draw, order 2 at 60 Hz, gives ~12 dB)."""
    from tasks.speech.attacks import channel

    t = np.arange(16000) / 16000
    x = (0.3 * np.sin(2 * np.pi * 30 * t) + 0.3 * np.sin(2 * np.pi * 1000 * t)).astype(np.float32)

    def level_db(y, hz):  # 1 Hz bins over one second
        return 20 * np.log10(np.abs(np.fft.rfft(y * np.hanning(y.size)))[hz] + 1e-12)

    drops = []
    for seed in range(40):
        y = channel(x, np.random.default_rng(seed)).astype(np.float64)
        drops.append((level_db(y, 1000) - level_db(y, 30)) - (level_db(x, 1000) - level_db(x, 30)))
    assert min(drops) >= 10, drops


def test_voices_of_the_splits_are_disjoint():
    train, val, test = (set(voice_pool(s)) for s in ("train", "val", "test"))
    assert train and val and test
    assert not (train & test) and not (train & val) and not (val & test)


def test_cache_reuses_an_entry_and_rebuilds_when_settings_change(bench_cache):
    calls = []

    def build():
        calls.append(1)
        return {"x": np.arange(len(calls) + 2)}

    settings = {"a": 1}
    first = cache.cached_arrays("demo", settings, build)
    again = cache.cached_arrays("demo", settings, build)
    assert len(calls) == 1 and np.array_equal(first["x"], again["x"])
    entry = cache.entry_dir("demo", settings)
    manifest = json.loads((entry / "manifest.json").read_text())
    assert manifest["settings"] == settings and manifest["hash"] == cache.settings_hash(settings)
    assert manifest["arrays"]["x"]["shape"] == [3]
    cache.cached_arrays("demo", {"a": 2}, build)  # new settings -> built again
    assert len(calls) == 2
    # a damaged entry (no manifest) is rebuilt, with a warning, not trusted
    (entry / "manifest.json").unlink()
    with pytest.warns(UserWarning, match="rebuilding"):
        cache.cached_arrays("demo", settings, build)
    assert len(calls) == 3
    assert not [p for p in (bench_cache / "demo").iterdir() if p.name.startswith(".building")]


def test_a_failed_build_leaves_no_entry(bench_cache):
    def build():
        raise RuntimeError("interrupted")

    with pytest.raises(RuntimeError):
        cache.cached_arrays("demo", {"b": 1}, build)
    assert not cache.entry_dir("demo", {"b": 1}).exists()


def test_noise_generators_are_finite_unit_rms_and_seeded():
    for name, make in noise.NOISE_TYPES.items():
        a, b = make(np.random.default_rng(1), 16000), make(np.random.default_rng(1), 16000)
        assert a.shape == (16000,) and np.isfinite(a).all(), name
        assert np.sqrt(np.mean(a.astype(np.float64) ** 2)) == pytest.approx(1.0, rel=1e-3), name
        assert np.array_equal(a, b), name


# --- flite / festival voices, when installed ------------------------------------------------
_FAKE_FLITE = '''#!{python}
"""A stand-in for Debian's flite: lists voices, writes an 8 kHz tone per call, logs calls."""
import math, os, struct, sys, wave
args = sys.argv[1:]
if "-lv" in args:
    print("Voices available: kal awb_time kal16 awb rms slt ")
    sys.exit(0)
if "--version" in args:
    print("  Carnegie Mellon University, Copyright (c) 1999-2016, all rights reserved")
    print("  version: flite-2.2-current Sep 2018 (http://cmuflite.org)")
    sys.exit(0)
opt = lambda name: args[args.index(name) + 1]
voice, text, out = opt("-voice"), opt("-t"), opt("-o")
stretch = float(opt("--setf").split("=")[1])
if voice not in ("kal", "kal16", "awb", "rms", "slt"):
    sys.exit("unknown voice " + voice)
with open(os.path.join(os.path.dirname(os.path.abspath(__file__)), "calls.log"), "a") as log:
    log.write(voice + "\\t" + text + "\\n")
sr, freq = 8000, 100 + 20 * len(voice)
n = int(sr * 0.25 * len(text.split()) * stretch)
samples = [0] * 400 + [int(8000 * math.sin(2 * math.pi * freq * i / sr)) for i in range(n)] + [0] * 400
with wave.open(out, "wb") as w:
    w.setnchannels(1); w.setsampwidth(2); w.setframerate(sr)
    w.writeframes(struct.pack("<%dh" % len(samples), *samples))
'''
_FAKE_FESTIVAL = """#!{python}
import sys
if "--version" in sys.argv:
    print("festival: Festival Speech Synthesis System: 2.5.0:release December 2017")
elif "--pipe" in sys.argv and "voice.list" in sys.stdin.read():
    print("(kal_diphone rab_diphone)")
"""
_FAKE_TEXT2WAVE = """#!{python}
import struct, sys, wave
text = sys.stdin.read()
out = sys.argv[sys.argv.index("-o") + 1]
samples = [int(5000 * ((i // 40) % 2 * 2 - 1)) for i in range(1600 * len(text.split()))]
with wave.open(out, "wb") as w:
    w.setnchannels(1); w.setsampwidth(2); w.setframerate(16000)
    w.writeframes(struct.pack("<%dh" % len(samples), *samples))
"""


def _fake_tts(bin_dir, monkeypatch, flite: bool = True, festival: bool = False):
    """PATH = a folder holding only fake `flite` (and `festival` + `text2wave`) scripts."""
    import sys

    bin_dir.mkdir(exist_ok=True)
    scripts = ({"flite": _FAKE_FLITE} if flite else {}) | (
        {"festival": _FAKE_FESTIVAL, "text2wave": _FAKE_TEXT2WAVE} if festival else {}
    )
    for name, text in scripts.items():
        (bin_dir / name).write_text(text.replace("{python}", sys.executable))
        (bin_dir / name).chmod(0o755)
    monkeypatch.setenv("PATH", str(bin_dir))
    return bin_dir


def _task_settings(task, split: str) -> dict:
    """The cache settings a task's split would be stored under (nothing is built)."""
    import tasks.antispoof
    import tasks.vad

    captured = {}

    def capture(kind, settings, build):
        captured.update(settings)
        return {}

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(tasks.antispoof, "cached_arrays", capture)
        mp.setattr(tasks.vad, "cached_arrays", capture)
        task.build_split(split)
    return captured


def test_without_flite_or_festival_the_pool_is_espeak_only_and_settings_unchanged(tmp_path, monkeypatch):
    from tasks.antispoof import AntispoofTask
    from tasks.speech import synthesis
    from tasks.vad import VadTask

    monkeypatch.setenv("PATH", str(tmp_path))  # an empty folder: no engine found
    assert synthesis.installed_voices() == [] and synthesis.voice_settings([]) == {}
    rng, again = np.random.default_rng(5), np.random.default_rng(5)
    assert [synthesis.random_voice(rng, "train", []) for _ in range(20)] == [
        synthesis.random_voice(again, "train") for _ in range(20)
    ]
    for task in (AntispoofTask(scale="smoke"), VadTask(scale="smoke")):
        settings = _task_settings(task, "test")
        assert not {"engines", "external_voices", "recorded"} & set(settings)  # so existing caches stay valid


def test_a_fake_flite_on_path_adds_its_voices_split_by_speaker(tmp_path, monkeypatch):
    from tasks.speech import synthesis

    _fake_tts(tmp_path / "bin", monkeypatch)
    voices = synthesis.installed_voices()
    assert voices == [("flite", v) for v in ("awb", "kal", "kal16", "rms", "slt")]  # awb_time only tells the time
    pools = {s: synthesis.external_pool(s, voices) for s in ("train", "val", "test")}
    assert sorted(v for pool in pools.values() for v in pool) == voices
    speakers = {s: {synthesis.voice_speaker(v) for _, v in pool} for s, pool in pools.items()}
    assert (
        all(speakers.values())
        and not (speakers["train"] & speakers["test"])
        and not (speakers["val"] & speakers["test"])
    )
    assert all((("flite", "kal") in pool) == (("flite", "kal16") in pool) for pool in pools.values())  # one speaker
    settings = synthesis.voice_settings(voices)
    assert settings["engines"] == ["espeak-ng", "flite"] and settings["engine_versions"] == {"flite": "2.2"}
    assert settings["external_voices"][0] == ["flite", "awb"]
    # draws: about EXTERNAL_SHARE of them from the split's flite voices, the rest espeak-ng
    rng = np.random.default_rng(0)
    drawn = [synthesis.random_voice(rng, "train", voices) for _ in range(400)]
    external = [v for v in drawn if v.engine == "flite"]
    assert {("flite", v.variant) for v in external} == set(pools["train"])
    assert abs(len(external) / 400 - synthesis.EXTERNAL_SHARE) < 0.06


def test_flite_speech_is_resampled_to_16k_trimmed_and_deterministic(tmp_path, monkeypatch):
    from tasks.speech.synthesis import Synthesizer, Voice

    bin_dir = _fake_tts(tmp_path / "bin", monkeypatch)
    synth = Synthesizer()
    slow, fast = (synth.say("seven apples near the river", Voice("", "slt", rate=r, engine="flite")) for r in (85, 170))
    assert slow.dtype == np.float32 and fast.size == pytest.approx(0.25 * 5 * 16000, rel=0.01)  # 1.25 s, at 16 kHz
    assert slow.size == pytest.approx(2 * fast.size, rel=0.01)  # rate 85 wpm = duration x2
    assert abs(fast[0]) > 0 and abs(fast[-1]) > 0  # leading/trailing silence trimmed
    assert np.array_equal(fast, synth.say("seven apples near the river", Voice("", "slt", rate=170, engine="flite")))
    assert (bin_dir / "calls.log").read_text().splitlines()[0] == "slt\tseven apples near the river"
    with pytest.raises(RuntimeError, match="flite:nosuch failed"):
        synth.say("hello", Voice("", "nosuch", engine="flite"))


def test_fake_festival_voices_are_found_and_used(tmp_path, monkeypatch):
    from tasks.speech import synthesis

    _fake_tts(tmp_path / "bin", monkeypatch, flite=False, festival=True)
    voices = synthesis.installed_voices()
    assert voices == [("festival", "kal_diphone"), ("festival", "rab_diphone")]
    assert synthesis.voice_settings(voices)["engine_versions"] == {"festival": "2.5.0"}
    x = synthesis.Synthesizer().say("the red box", synthesis.Voice("", "kal_diphone", engine="festival"))
    assert x.size == pytest.approx(3 * 1600, abs=80)


def test_generated_data_use_flite_voices_and_their_cache_key_differs(tmp_path, monkeypatch):
    from tasks.antispoof import AntispoofTask
    from tasks.speech import spoof_data, synthesis
    from tasks.vad import VadTask

    bin_dir = _fake_tts(tmp_path / "bin", monkeypatch)
    voices = synthesis.installed_voices()
    a = spoof_data.generate_utterances(0, 6, "test", 0.5, 1, ["lpc"], [], voices)
    spoken = [line.split("\t")[0] for line in (bin_dir / "calls.log").read_text().splitlines()]
    assert spoken and set(spoken) <= {v for _, v in synthesis.external_pool("test", voices)}
    assert len(spoken) == 2  # seed 1: utterances 0 and 1 are flite's, 2-5 espeak-ng's
    # flite is deterministic (espeak-ng is only in a fresh process: compare flite's clips)
    b = spoof_data.generate_utterances(0, 2, "test", 0.5, 1, ["lpc"], [], voices)
    assert np.array_equal(a["audio"][a["utterance"] < 2], b["audio"])
    espeak_only = spoof_data.generate_utterances(0, 2, "test", 0.5, 1, ["lpc"], [])
    assert not np.array_equal(b["audio"], espeak_only["audio"])
    for task in (AntispoofTask(scale="smoke"), VadTask(scale="smoke")):
        with_flite = _task_settings(task, "train")
        assert with_flite["engines"] == ["espeak-ng", "flite"] and with_flite["external_voices"] == [
            list(v) for v in voices
        ]
        monkeypatch.setenv("PATH", str(tmp_path))
        assert cache.settings_hash(_task_settings(task, "train")) != cache.settings_hash(with_flite)
        monkeypatch.setenv("PATH", str(bin_dir))


@pytest.mark.skipif(__import__("shutil").which("flite") is None, reason="Debian's flite is not installed")
def test_real_flite_when_installed():
    from tasks.speech import synthesis

    voices = synthesis.installed_voices()
    name = next(v for e, v in voices if e == "flite")
    voice = synthesis.Voice("", name, rate=150, engine="flite")
    first = synthesis.Synthesizer().say("The old man found the red box.", voice)
    assert first.dtype == np.float32 and 8000 < first.size < 80000 and np.abs(first).max() > 0.05
    assert np.array_equal(first, synthesis.Synthesizer().say("The old man found the red box.", voice))
