"""ONNX export: every task and model family round-trips through ONNX Runtime at any length;
the streaming VAD gives the offline scores; the measurement phase stores its records."""

import numpy as np
import pytest
import torch

from bench.checkpoint import load_candidate, save_candidate
from bench.cli import main
from bench.export import export_offline, export_streaming, read_metadata
from bench.latency import ort_session, ort_stream_step, run_stream, torch_stream_step
from bench.measure import LATENCY_FIELDS, LatencySettings, measure_candidate
from bench.store import ResultStore
from tests.conftest import make_task, task_variants

VARIANTS = task_variants() + [("antispoof-lowband", "antispoof", {"front_end": "lowband"})]


def _trained_like(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Random norm statistics and affine maps: a fresh model's identity norms would hide mistakes."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.running_mean.copy_(torch.rand(m.running_mean.shape, generator=g) - 0.5)
            m.running_var.copy_(0.5 + torch.rand(m.running_var.shape, generator=g))
            m.weight.data.copy_(0.5 + torch.rand(m.weight.shape, generator=g))
    return model.eval()


def _half_widths(task) -> dict[str, int]:
    return {slot: max(1, n // 2) for slot, n in task.width_slots().items()}


@pytest.mark.parametrize("name,overrides", [v[1:] for v in VARIANTS], ids=[v[0] for v in VARIANTS])
def test_saved_candidate_round_trips_through_onnx_runtime_at_two_lengths(name, overrides, tmp_path, one_thread):
    task = make_task(name, overrides)
    torch.manual_seed(0)
    widths = task.resolve_widths(_half_widths(task))
    save_candidate(
        tmp_path / "c.pt",
        _trained_like(task.build_model(widths)),
        task=name,
        task_config=vars(task.config),
        widths=widths,
        meta={"method": "test"},
    )
    model, info = load_candidate(tmp_path / "c.pt")
    path = export_offline(model, task, tmp_path / "c.onnx", info)
    session = ort_session(str(path))
    lengths = (1.0, 2.3) if task.example_seconds else (None,)
    for seconds in lengths:
        x = task.latency_input(seconds) if seconds else task.example_input()
        with torch.no_grad():
            expected = model(x).numpy()
        got = session.run(None, {"input": x.numpy()})[0]
        assert got.shape == expected.shape
        assert np.abs(got - expected).max() <= 1e-4
    if task.example_seconds:  # the longer file gives more frames (or the same one score): the time axis is dynamic
        assert session.get_inputs()[0].shape[1] == "samples"
    meta = read_metadata(path)
    assert (
        meta["task"] == name and meta["widths"] == widths and meta["front_end_included"] == bool(task.example_seconds)
    )


def _crnn(seed: int = 0):
    task = make_task("vad", {"model": "crnn"})
    torch.manual_seed(seed)
    return task, _trained_like(task.build_model({"conv1": 16, "conv2": 24, "gru": 12, "head": 8}), seed)


@pytest.mark.parametrize("chunk_ms", [10, 100, 170])
def test_streaming_vad_gives_the_offline_scores(chunk_ms, one_thread):
    task, model = _crnn()
    streamer = task.streamer(model)
    x = task.latency_input(1.37)
    with torch.no_grad():
        offline = model(x)
    state, rest = streamer.start(x)
    rest = torch.nn.functional.pad(rest, (0, 256 + streamer.lookahead))  # the end of the recording: flush with silence
    scores = torch.cat(run_stream(torch_stream_step(streamer), state, rest, chunk_ms * 16, streamer.lookahead), dim=1)
    frames = offline.shape[1]
    assert scores.shape[1] >= frames
    # All but the last 6 frames (offline reflects the audio at the end and zero-pads features).
    assert torch.allclose(scores[:, : frames - 6], offline[:, : frames - 6], atol=1e-5)
    assert not torch.allclose(scores[:, frames - 6 : frames], offline[:, frames - 6 :], atol=1e-5)


def test_streaming_step_in_onnx_runtime_gives_the_offline_scores(tmp_path, one_thread):
    task, model = _crnn(1)
    streamer = task.streamer(model)
    path = export_streaming(streamer, task, 1600, tmp_path / "s.onnx")
    assert read_metadata(path)["state"] == list(streamer.state_names)
    x = task.latency_input(2.0)
    with torch.no_grad():
        offline = model(x).numpy()
    state, rest = streamer.start(x)
    step = ort_stream_step(ort_session(str(path)))
    # The exported step takes other chunk lengths too (its time axis is dynamic).
    for chunk in (1600, 480):
        scores = np.concatenate(
            run_stream(step, [s.numpy() for s in state], rest.numpy(), chunk, streamer.lookahead), axis=1
        )
        n = offline.shape[1] - 6
        assert np.abs(scores[:, :n] - offline[:, :n]).max() <= 1e-4


def test_transformer_vad_does_not_claim_to_stream():
    task = make_task("vad", {"model": "transformer"})
    assert task.streamer(task.build_model()) is None


def test_measurement_records_every_runtime_and_shape(tmp_path, one_thread):
    task, model = _crnn()
    settings = LatencySettings(offline_seconds=2.0, stream_seconds=1.0, repeats=3, warmup=1)
    records = measure_candidate(model, task, tmp_path / "candidate0.pt", settings)
    kinds = {(r["runtime"], r["shape"], r["audio_seconds"]) for r in records}
    assert kinds == {(rt, "offline", s) for rt in ("onnxruntime", "pytorch") for s in (1.0, 2.0)} | {
        (rt, "streaming", 0.1) for rt in ("onnxruntime", "pytorch")
    }
    for r in records:
        assert set(r) <= set(LATENCY_FIELDS) and r["threads"] == 1 and r["machine"]["cpu_count"] >= 1
        assert 0 < r["p10_ms"] <= r["median_ms"] <= r["p90_ms"]
        assert 0 < r["cpu_median_ms"] <= 10 * r["median_ms"]  # work done in the calling thread
        assert r["rtf"] == pytest.approx(r["median_ms"] / 1e3 / r["audio_seconds"])
    streaming = [r for r in records if r["shape"] == "streaming"]
    # 1 s + 256 reflected samples, less 352 in the start state and 640 in the first call: 10 chunks, 1 untimed.
    assert all(r["input_shape"] == [1, 1600] and r["calls"] == 9 for r in streaming)
    assert all(r["max_abs_diff"] <= 1e-4 for r in records if r["runtime"] == "onnxruntime" and r["shape"] == "offline")
    assert (tmp_path / "candidate0.onnx").is_file() and (tmp_path / "candidate0.stream.onnx").is_file()


def test_chunk_that_is_not_a_whole_number_of_hops_is_refused(tmp_path):
    task, model = _crnn()
    with pytest.raises(Exception, match="multiple of the model's 10 ms hop"):
        measure_candidate(
            model, task, tmp_path / "c.pt", LatencySettings(chunk_ms=15, offline_seconds=1.0, repeats=1, warmup=0)
        )


def test_export_and_latency_commands(store_path, tmp_path, capsys):
    assert (
        main(
            [
                "run",
                "--task",
                "synthetic",
                "--method",
                "baseline",
                "--seed",
                "0",
                "--scale",
                "smoke",
                "--quiet",
                "--store",
                store_path,
            ]
        )
        == 0
    )
    row = ResultStore(store_path).rows()[0]
    assert row["latency_ms"] > 0 and {r["runtime"] for r in row["latency"]} == {"onnxruntime", "pytorch"}
    out = tmp_path / "m.onnx"
    assert main(["export", "--row", str(row["id"]), "--store", store_path, "--out", str(out)]) == 0
    assert read_metadata(out)["widths"] == row["widths"]
    assert main(["latency", "--store", store_path, "--quiet"]) == 0
    assert "0 candidate(s) measured" in capsys.readouterr().err  # already measured
    assert main(["latency", "--store", store_path, "--quiet", "--force", "--repeats", "2"]) == 0
    assert ResultStore(store_path).rows()[0]["latency"][0]["calls"] == 2


@pytest.mark.parametrize(
    "argv,message",
    [
        (["export", "--row", "999"], "no result row 999"),
        (["export", "--candidate", "/nonexistent/c.pt"], "does not exist"),
        (["latency", "--chunk-ms", "0"], "must be positive"),
        (["latency", "--repeats", "0"], "repeats >= 1"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(argv, message, store_path, capsys):
    assert main([*argv, "--store", store_path]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0]


@pytest.mark.parametrize("model_family", ["crnn", "transformer"])
def test_onnx_front_end_computes_only_the_bins_the_kept_mel_bands_read(model_family, tmp_path, one_thread):
    import onnx

    from tasks.speech.frontend import mel_filters

    task = make_task("vad", {"model": model_family})
    model = _trained_like(task.build_model({"n_mels": 4}))
    kept = torch.from_numpy(mel_filters(80)[[3, 10, 40, 70]])  # as a compaction keeping 4 of 80 bands leaves them
    model.input.logmel.filters.copy_(kept)
    read = int((kept != 0).any(0).sum())
    path = export_offline(model, task, tmp_path / "m.onnx")
    x = task.latency_input(1.3)
    with torch.no_grad():
        expected = model(x).numpy()
    assert np.abs(ort_session(str(path)).run(None, {"input": x.numpy()})[0] - expected).max() <= 1e-4
    graph = onnx.load(str(path)).graph
    tensors = list(graph.initializer) + [
        a.t for n in graph.node if n.op_type == "Constant" for a in n.attribute if a.name == "value"
    ]
    dft = [t for t in tensors if len(t.dims) == 2 and t.dims[0] == 200]  # the DFT bases: half a window by bins
    assert [t.dims[1] for t in dft] == [read, read] and read < 257 // 4
