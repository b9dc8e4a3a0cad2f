"""The report sets measured latency beside FLOP/s: error against latency, and each
candidate's latency speed-up next to its FLOP/s cut."""

from bench.store import ResultStore
from reports.groups import offline_latency
from reports.report import build_report
from tests.test_reports import _put, _row


def _timed(ms_1s: float, ms_10s: float) -> list[dict]:
    return [
        {"runtime": "onnxruntime", "shape": "offline", "audio_seconds": 1.0, "median_ms": ms_1s},
        {"runtime": "onnxruntime", "shape": "offline", "audio_seconds": 10.0, "median_ms": ms_10s},
        {"runtime": "pytorch", "shape": "offline", "audio_seconds": 10.0, "median_ms": 99.0},
    ]


def test_offline_latency_is_the_longest_input_in_the_deployment_runtime():
    assert offline_latency(_timed(1.0, 8.0)) == 8.0
    assert offline_latency(None) != offline_latency(None)  # NaN: not measured


def test_report_shows_latency_speed_up_beside_the_flops_cut(tmp_path):
    store = ResultStore(str(tmp_path / "results.db"))
    rows = [
        _row(
            "vad", "baseline", 0, "dense", 1e6, 5.0, metric="eer", unit="FLOP/s", family="crnn", latency=_timed(1, 8.0)
        ),
        _row(
            "vad", "beta", 0, "b=0.25", 2.5e5, 6.0, metric="eer", unit="FLOP/s", family="crnn", latency=_timed(1, 4.0)
        ),
    ]
    _put(store, rows)
    report = build_report(store, tmp_path / "report")
    page = report.html_path.read_text()
    assert "speed-up" in page and "2.00x" in page and "4.00x" in page  # latency 8 -> 4 ms beside a 4x FLOP/s cut
    assert "latency ms (onnxruntime, 10 s, 1 thread)" in page
    assert (report.out_dir / "figures" / "vad-crnn_latency.png").exists()
