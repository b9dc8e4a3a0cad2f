"""Real-corpus loaders on tiny fixtures in the published layouts, and bad-input cases."""

import warnings
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from bench.cli import main
from bench.config import ConfigError
from tasks.speech import corpora


def _tone(seconds: float, sr: int, freq: float = 220.0, start: float = 0.0) -> np.ndarray:
    t = np.arange(int(seconds * sr)) / sr
    x = 0.3 * np.sin(2 * np.pi * freq * t)
    x[: int(start * sr)] = 0
    return x.astype(np.float32)


def make_vctk(root: Path, version: str = "0.92", speakers=("p225", "p226", "p227", "p228", "p229", "p230")) -> None:
    for k, spk in enumerate(speakers):
        for i in (1, 2):
            if version == "0.92":
                folder = root / "VCTK-Corpus-0.92" / "wav48_silence_trimmed" / spk
                names = [f"{spk}_{i:03d}_mic1.flac", f"{spk}_{i:03d}_mic2.flac"]
                txt = root / "VCTK-Corpus-0.92" / "txt" / spk
                info = root / "VCTK-Corpus-0.92" / "speaker-info.txt"
            else:
                folder = root / "VCTK-Corpus" / "wav48" / spk
                names = [f"{spk}_{i:03d}.wav"]
                txt = root / "VCTK-Corpus" / "txt" / spk
                info = root / "VCTK-Corpus" / "speaker-info.txt"
            folder.mkdir(parents=True, exist_ok=True)
            txt.mkdir(parents=True, exist_ok=True)
            for name in names:
                sf.write(folder / name, _tone(1.0, 48000, 150 + 20 * k + i, start=0.2), 48000)
            (txt / f"{spk}_{i:03d}.txt").write_text("Please call Stella.\n")
        info.write_text(
            "ID  AGE  GENDER  ACCENTS  REGION COMMENTS\n"
            + "".join(f"{s if version == '0.92' else s[1:]}  23  F    English    Southern  England\n" for s in speakers)
        )


def make_esc50(root: Path, bad_header: bool = False) -> None:
    base = root / "ESC-50-master"
    (base / "audio").mkdir(parents=True)
    (base / "meta").mkdir()
    rows = ["filename,fold,target,category,esc10,src_file,take" if not bad_header else "file,fold"]
    for fold in range(1, 6):
        for take in "AB":
            name = f"{fold}-1000{fold}-{take}-0.wav"
            rng = np.random.default_rng(fold)
            sf.write(base / "audio" / name, (0.1 * rng.standard_normal(44100 * 5 // 10)).astype(np.float32), 44100)
            rows.append(f"{name},{fold},0,dog,True,1000{fold},{take}")
    (base / "meta" / "esc50.csv").write_text("\n".join(rows) + "\n")


def make_asvspoof(root: Path, skip_protocol: str | None = None) -> None:
    la = root / "LA"
    protos = la / "ASVspoof2019_LA_cm_protocols"
    protos.mkdir(parents=True)
    (la / "ASVspoof2019_LA_asv_protocols").mkdir()  # the other family: must not be used
    systems = {"train": ["A01", "A02"], "dev": ["A01", "A02"], "eval": ["A07", "A16"]}
    for part, ext, letter in (("train", "trn", "T"), ("dev", "trl", "D"), ("eval", "trl", "E")):
        flac = la / f"ASVspoof2019_LA_{part}" / "flac"
        flac.mkdir(parents=True)
        lines = []
        for i in range(6):
            utt = f"LA_{letter}_{1000000 + i:07d}"
            bona = i % 3 == 0
            system = "-" if bona else systems[part][i % 2]
            sf.write(flac / f"{utt}.flac", _tone(0.5, 16000, 200 + 40 * i), 16000)
            lines.append(f"LA_00{79 + i % 2} {utt} - {system} {'bonafide' if bona else 'spoof'}")
        if part != skip_protocol:
            (protos / f"ASVspoof2019.LA.cm.{part}.{ext}.txt").write_text("\n".join(lines) + "\n")


@pytest.fixture
def cache_env(tmp_path, monkeypatch):
    monkeypatch.setenv("BENCH_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("BENCH_DATA_WORKERS", "1")


@pytest.mark.parametrize("version", ["0.92", "0.80"])
def test_vctk_loader_finds_speakers_in_both_layouts(tmp_path, version):
    make_vctk(tmp_path, version)
    speakers = corpora.vctk_speakers(tmp_path)
    assert sorted(speakers) == ["p225", "p226", "p227", "p228", "p229", "p230"]
    assert all(len(files) == 2 for files in speakers.values())  # mic1 only in 0.92
    assert all(
        p.name.endswith("_mic1.flac" if version == "0.92" else ".wav") for files in speakers.values() for p in files
    )
    x = corpora.read_audio(speakers["p225"][0], 48000)
    assert x.dtype == np.float32 and abs(x.size - 16000) <= 1  # resampled 48 -> 16 kHz
    splits = [set(corpora.split_speakers(list(speakers), s)) for s in ("train", "val", "test")]
    assert all(splits) and not (splits[0] & splits[2]) and set().union(*splits) == set(speakers)


def test_esc50_loader_uses_folds_for_splits(tmp_path):
    make_esc50(tmp_path)
    assert [p.name[0] for p in corpora.esc50_files(tmp_path, "test")] == ["5", "5"]
    assert sorted({p.name[0] for p in corpora.esc50_files(tmp_path, "train")}) == ["1", "2", "3"]
    assert corpora.read_audio(corpora.esc50_files(tmp_path, "val")[0], 44100).size == 8000


def test_asvspoof_protocol_is_parsed(tmp_path):
    make_asvspoof(tmp_path)
    entries = corpora.asvspoof_protocol(tmp_path, "train")
    assert len(entries) == 6 and sum(e.bonafide for e in entries) == 2
    assert entries[1].system == "A02" and entries[1].path.name == "LA_T_1000001.flac" and entries[1].path.is_file()
    assert {e.system for e in corpora.asvspoof_protocol(tmp_path, "test")} == {"-", "A07", "A16"}


def test_wrong_layouts_and_missing_protocols_are_one_line_config_errors(tmp_path):
    with pytest.raises(ConfigError, match="VCTK not found.*wav48_silence_trimmed"):
        corpora.vctk_speakers(tmp_path)
    with pytest.raises(ConfigError, match=r"esc50\.csv"):
        corpora.esc50_files(tmp_path, "train")
    make_asvspoof(tmp_path, skip_protocol="dev")
    with pytest.raises(ConfigError, match=r"ASVspoof2019\.LA\.cm\.dev\.trl\.txt") as err:
        corpora.asvspoof_protocol(tmp_path, "val")
    assert "\n" not in str(err.value)
    bad = tmp_path / "bad"
    make_esc50(bad, bad_header=True)
    with pytest.raises(ConfigError, match="header"):
        corpora.esc50_files(bad, "train")


def test_malformed_protocol_line_names_file_and_line(tmp_path):
    make_asvspoof(tmp_path)
    proto = tmp_path / "LA" / "ASVspoof2019_LA_cm_protocols" / "ASVspoof2019.LA.cm.train.trn.txt"
    proto.write_text(proto.read_text() + "LA_0079 LA_T_9 spoof\n")
    with pytest.raises(ConfigError, match=r"train\.trn\.txt line 7: expected 5 fields"):
        corpora.asvspoof_protocol(tmp_path, "train")


def test_bad_audio_files_are_named_and_skipped_and_all_bad_is_an_error(tmp_path):
    good = tmp_path / "good.flac"
    sf.write(good, _tone(0.5, 16000), 16000)
    corrupt = tmp_path / "corrupt.flac"
    corrupt.write_bytes(b"fLaC this is not audio")
    empty = tmp_path / "empty.wav"
    sf.write(empty, np.zeros(0, np.float32), 16000)
    wrong_rate = tmp_path / "rate.flac"
    sf.write(wrong_rate, _tone(0.5, 8000), 8000)
    missing = tmp_path / "missing.flac"
    with pytest.warns(UserWarning) as record:
        loaded = corpora.load_usable([good, corrupt, empty, wrong_rate, missing], 16000, "test")
    assert [p for p, _ in loaded] == [good]
    messages = " | ".join(str(w.message) for w in record)
    assert "corrupt.flac: unreadable or corrupt audio" in messages and "expected a 16000 Hz audio file" in messages
    assert "empty.wav: empty audio file" in messages
    assert "rate.flac: sample rate 8000 Hz, expected 16000 Hz" in messages
    assert "missing.flac: file not found" in messages
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(ConfigError, match="no usable test audio among 2 files.*corrupt.flac"):
            corpora.load_usable([corrupt, empty], 16000, "test")


def test_vad_task_on_vctk_and_esc50_fixtures(tmp_path, cache_env):
    from tasks.vad import NOISE_KINDS, VadConfig, VadTask

    make_vctk(tmp_path)
    make_esc50(tmp_path)
    task = VadTask(VadConfig(source="vctk+esc50"), scale="smoke", data_root=tmp_path)
    d = task.data("test")
    assert d["audio"].shape == (16, 32000) and d["labels"].shape == (16, 201)
    assert 0 < d["labels"].mean() < 1
    assert set(d["noise"].tolist()) == {NOISE_KINDS.index("file")}  # ESC-50 clips, no generated noise
    assert d["snr"].min() >= -5 and d["snr"].max() <= 35
    # the test speakers' clips differ from the training speakers' ones
    assert not np.array_equal(task.data("train")["audio"][:1], d["audio"][:1])


def test_antispoof_task_on_asvspoof_fixture_with_a_corrupt_file(tmp_path, cache_env):
    from tasks.antispoof import AntispoofConfig, AntispoofTask

    make_asvspoof(tmp_path)
    (tmp_path / "LA" / "ASVspoof2019_LA_eval" / "flac" / "LA_E_1000002.flac").write_bytes(b"garbage")
    task = AntispoofTask(AntispoofConfig(source="asvspoof2019"), scale="smoke", data_root=tmp_path)
    with pytest.warns(UserWarning, match="LA_E_1000002.flac: unreadable"):
        d = task.data("test")
    assert d["audio"].shape == (5, 16000)  # 6 listed, 1 corrupt skipped; 1 s clips padded
    assert [str(x) for x in d["names"]] == ["A01", "A02", "A07", "A16"] and int(d["n_seen"]) == 2
    assert (d["attack"] == -1).sum() == 2


def test_cli_reports_a_missing_data_root_in_one_line_with_exit_2(tmp_path, capsys, cache_env):
    code = main(
        [
            "run",
            "--task",
            "antispoof",
            "--method",
            "baseline",
            "--scale",
            "smoke",
            "--seed",
            "0",
            "--set",
            "task.source=asvspoof2019",
            "--data-root",
            str(tmp_path),
            "--store",
            str(tmp_path / "r.db"),
        ]
    )
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1
    assert "ASVspoof2019.LA.cm.train.trn.txt" in err
    code = main(
        [
            "run",
            "--task",
            "vad",
            "--method",
            "baseline",
            "--scale",
            "smoke",
            "--seed",
            "0",
            "--set",
            "task.source=vctk+esc50",
            "--store",
            str(tmp_path / "r.db"),
        ]
    )
    assert code == 2 and "needs --data-root" in capsys.readouterr().err


def test_a_missing_noise_directory_is_a_config_error(tmp_path):
    from tasks.vad import VadConfig, VadTask

    with pytest.raises(ConfigError, match="noise directory .*nowhere does not exist"):
        VadTask(VadConfig(noise_dir=str(tmp_path / "nowhere")), scale="smoke")
    (tmp_path / "noises").mkdir()
    sf.write(tmp_path / "noises" / "fan.ogg", _tone(0.5, 22050, 90.0), 22050)
    from tasks.speech.noise import noise_files

    (found,) = noise_files(tmp_path / "noises")
    assert found.name == "fan.ogg" and corpora.read_audio(found, None).size == 8000  # any rate, resampled


# --- a user's own recordings as bona fide speech (antispoof) -------------------------------
def make_recordings(
    root: Path, speakers=("spk1", "spk2", "spk3", "spk4", "spk5"), corrupt_in: str | None = "spk1"
) -> Path:
    """Sub-folder per speaker, two 22.05 kHz takes each, and one corrupt file in `corrupt_in`."""
    for k, spk in enumerate(speakers):
        (root / spk).mkdir(parents=True)
        for i in (1, 2):
            sf.write(root / spk / f"take{i}.wav", _tone(0.8, 22050, 120 + 30 * k + 10 * i, start=0.1), 22050)
    if corrupt_in:
        (root / corrupt_in / "take3.flac").write_bytes(b"fLaC not audio")
    (root / "notes.txt").write_text("not audio\n")
    return root


def test_recording_groups_are_speakers_or_loose_files_and_bad_folders_are_one_line_errors(tmp_path):
    make_recordings(tmp_path / "recs")
    sf.write(tmp_path / "recs" / "loose.flac", _tone(0.5, 16000), 16000)
    groups = corpora.recording_groups(tmp_path / "recs")
    assert sorted(groups) == ["loose.flac", "spk1", "spk2", "spk3", "spk4", "spk5"]
    assert [p.name for p in groups["spk1"]] == ["take1.wav", "take2.wav", "take3.flac"]
    with pytest.raises(ConfigError, match="nowhere does not exist") as err:
        corpora.recording_groups(tmp_path / "nowhere", "task.bonafide_dir")
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "readme.txt").write_text("no audio here")
    with pytest.raises(ConfigError, match=r"task\.bonafide_dir .*empty holds no \.wav/\.flac/\.ogg recordings") as err:
        corpora.recording_groups(tmp_path / "empty", "task.bonafide_dir")
    assert "\n" not in str(err.value)


def test_cli_names_an_empty_bonafide_dir_in_one_line_with_exit_2(tmp_path, capsys, cache_env):
    (tmp_path / "empty").mkdir()
    code = main(
        [
            "run",
            "--task",
            "antispoof",
            "--method",
            "baseline",
            "--scale",
            "smoke",
            "--seed",
            "0",
            "--set",
            f"task.bonafide_dir={tmp_path / 'empty'}",
            "--store",
            str(tmp_path / "r.db"),
        ]
    )
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and str(tmp_path / "empty") in err


def test_antispoof_mixes_recorded_bona_fide_and_its_spoofs_disjoint_by_speaker(tmp_path, cache_env, monkeypatch):
    import json

    import tasks.antispoof
    from tasks.antispoof import AntispoofConfig, AntispoofTask
    from tasks.speech import cache

    monkeypatch.setitem(tasks.antispoof._SIZES, "smoke", (4, 2, 6, 0.5))  # utterances per split, clip seconds
    monkeypatch.setenv("PATH", str(tmp_path))  # no flite/festival: espeak-ng only, whatever the machine has
    recs = make_recordings(tmp_path / "recs")
    config = AntispoofConfig(bonafide_dir=str(recs), seen_attacks=["lpc"], unseen_attacks=["world_shift"])
    task = AntispoofTask(config, scale="smoke")
    # speakers (sorted) 1 -> test, 2 -> val, 3-5 -> train; at most half of a split recorded
    chosen = {
        s: task._recordings(s, tasks.antispoof._SIZES["smoke"][i]) for i, s in enumerate(("train", "val", "test"))
    }
    assert {p.parent.name for p, _ in chosen["test"]} == {"spk1"} and {p.parent.name for p, _ in chosen["val"]} == {
        "spk2"
    }
    assert {p.parent.name for p, _ in chosen["train"]} <= {"spk3", "spk4", "spk5"} and len(chosen["train"]) == 2
    assert len(chosen["test"]) == 3 and len(chosen["val"]) == 1  # test: all of spk1's, the corrupt one too
    with pytest.warns(UserWarning, match="skipping recorded bona fide file: .*take3.flac: unreadable"):
        d = task.data("test")
    recorded = d["recorded"].astype(bool)
    assert [str(x) for x in d["names"]] == ["lpc", "world_shift"] and d["audio"].shape[1] == 8000
    # 3 synthetic + 2 usable recorded utterances, each as bona fide and through every attack (test)
    assert (~recorded).sum() == 9 and recorded.sum() == 6
    assert sorted(d["attack"][recorded].tolist()) == [-1, -1, 0, 0, 1, 1]
    assert set(d["utterance"][recorded].tolist()) == {3, 4} and set(d["utterance"][~recorded].tolist()) == {0, 1, 2}
    # cached with the file list; the same again from a fresh task; without recordings another entry
    (manifest,) = [json.loads(m.read_text()) for m in (tmp_path / "cache" / "antispoof").glob("*/manifest.json")]
    assert [Path(p).name for p, _, _ in manifest["settings"]["recorded"]] == [p.name for p, _ in chosen["test"]]
    again = AntispoofTask(config, scale="smoke").data("test")
    assert all(np.array_equal(d[k], again[k]) for k in d)
    plain = AntispoofTask(AntispoofConfig(seen_attacks=["lpc"], unseen_attacks=["world_shift"]), scale="smoke")
    assert "recorded" not in plain.data("test") and len(list((tmp_path / "cache" / "antispoof").iterdir())) == 2
    assert cache.settings_hash(manifest["settings"]) == manifest["hash"]


def test_antispoof_takes_recorded_bona_fide_from_vctk_by_speaker(tmp_path, cache_env, monkeypatch):
    import tasks.antispoof
    from tasks.antispoof import AntispoofConfig, AntispoofTask

    monkeypatch.setitem(tasks.antispoof._SIZES, "smoke", (4, 2, 2, 0.5))
    monkeypatch.setenv("PATH", str(tmp_path))  # espeak-ng only
    make_vctk(tmp_path)
    config = AntispoofConfig(bonafide_vctk=True, seen_attacks=["lpc"], unseen_attacks=["mlsa"])
    with pytest.raises(ConfigError, match="bonafide_vctk needs --data-root"):
        AntispoofTask(config, scale="smoke")
    with pytest.raises(ValueError, match="source=synthetic only"):
        AntispoofConfig(source="asvspoof2019", bonafide_vctk=True).validate()
    task = AntispoofTask(config, scale="smoke", data_root=tmp_path)
    picked = {s: task._recordings(s, 4) for s in ("train", "val", "test")}
    # corpora.split_speakers: sorted speakers 0 and 5 -> test, 1 -> val, the rest train
    assert {p.parent.name for p, _ in picked["test"]} <= {"p225", "p230"} and {
        p.parent.name for p, _ in picked["val"]
    } == {"p226"}
    assert {p.parent.name for p, _ in picked["train"]} <= {"p227", "p228", "p229"} and len(picked["train"]) == 2
    assert all(sr == 48000 and p.name.endswith("_mic1.flac") for files in picked.values() for p, sr in files)
    d = task.data("test")  # 1 synthetic + 1 VCTK utterance, each bona fide + lpc + mlsa
    assert d["audio"].shape == (6, 8000) and d["recorded"].tolist() == [0, 0, 0, 1, 1, 1]
    assert d["attack"].tolist() == [-1, 0, 1, -1, 0, 1]
