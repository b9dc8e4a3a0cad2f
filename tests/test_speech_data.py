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
