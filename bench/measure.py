"""The measurement phase: every stored candidate exported to ONNX and timed, after all training.

Run in the main process once the training workers are gone, so nothing else competes for
the cores; one thread by default. Each figure is stored as a record in the row's `latency`
column (see `LATENCY_FIELDS`), and `latency_ms` is PyTorch's median on the example input.
"""

from __future__ import annotations

import datetime as dt
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from bench import provenance
from bench.export import export_offline, export_streaming
from bench.latency import (
    Timing,
    one_thread,
    ort_offline,
    ort_session,
    ort_stream_step,
    stream_timing,
    torch_offline,
    torch_stream_step,
)

RUNTIMES = ("onnxruntime", "pytorch")
# What each record holds: runtime and version, threads, shape (offline | streaming), input
# shape, seconds of audio per call, chunk length (streaming), median and spread (10th-90th
# percentile) in ms, the calling thread's median CPU ms, calls and warm-up calls,
# real-time factor (time / audio), largest
# difference to PyTorch's outputs (ONNX Runtime, offline), the ONNX file, machine, when.
LATENCY_FIELDS = (
    "runtime",
    "runtime_version",
    "threads",
    "shape",
    "input_shape",
    "audio_seconds",
    "chunk_ms",
    "median_ms",
    "p10_ms",
    "p90_ms",
    "cpu_median_ms",
    "calls",
    "warmup",
    "rtf",
    "max_abs_diff",
    "onnx_file",
    "machine",
    "measured_at",
)


@dataclass(frozen=True)
class LatencySettings:
    offline_seconds: float = 10.0  # audio per call in the offline shape (besides the 1 s example input)
    chunk_ms: float = 100.0  # streaming chunk length
    stream_seconds: float = 10.0  # audio fed through the stream; every chunk after the warm-up is timed
    repeats: int = 15  # timed offline calls
    warmup: int = 3  # untimed calls (offline) or chunks (streaming) first
    threads: int = 1  # threads of either runtime

    def validate(self, hop_ms: float | None = None) -> None:
        from bench.config import ConfigError

        if self.threads < 1 or self.repeats < 1 or self.warmup < 0:
            raise ConfigError(
                "latency needs threads >= 1, repeats >= 1, warmup >= 0; "
                f"got {self.threads}, {self.repeats}, {self.warmup}"
            )
        if self.offline_seconds <= 0 or self.stream_seconds <= 0 or self.chunk_ms <= 0:
            raise ConfigError("latency: --seconds, --stream-seconds and --chunk-ms must be positive")
        if hop_ms and abs(self.chunk_ms / hop_ms - round(self.chunk_ms / hop_ms)) > 1e-9:
            raise ConfigError(
                f"--chunk-ms {self.chunk_ms:g} is not a multiple of the model's {hop_ms:g} ms hop; e.g. 100"
            )


def measure_candidate(
    model: nn.Module, task: Any, onnx_base: Path, settings: LatencySettings, info: dict[str, Any] | None = None
) -> list[dict[str, Any]]:
    """Export `model` beside `onnx_base` (``.onnx``, ``.stream.onnx``) and time it in every runtime and shape."""
    import onnxruntime

    model.eval()
    machine = {k: v for k, v in provenance.machine().items() if k != "torch_threads"}
    common = {"threads": settings.threads, "machine": machine}
    versions = {"onnxruntime": onnxruntime.__version__, "pytorch": torch.__version__}
    records = []

    def record(runtime: str, shape: str, x_shape, seconds, timing: Timing, **extra) -> None:
        rtf = timing.median_ms / 1e3 / seconds if seconds else None
        records.append(
            {
                "runtime": runtime,
                "runtime_version": versions[runtime],
                "shape": shape,
                "input_shape": list(x_shape),
                "audio_seconds": seconds,
                **asdict(timing),
                "rtf": rtf,
                **common,
                **extra,
                "measured_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            }
        )

    offline_file = export_offline(model, task, onnx_base.with_suffix(".onnx"), info)
    session = ort_session(str(offline_file), settings.threads)
    audio = bool(task.example_seconds)
    inputs = [(task.example_seconds, task.example_input())]
    if audio and settings.offline_seconds != task.example_seconds:
        inputs.append((settings.offline_seconds, task.latency_input(settings.offline_seconds)))
    with one_thread(settings.threads):
        for seconds, x in inputs:
            with torch.inference_mode():
                reference = model(x).numpy()
            diff = float(abs(session.run(None, {"input": x.numpy()})[0] - reference).max())
            record(
                "onnxruntime",
                "offline",
                x.shape,
                seconds if audio else None,
                ort_offline(session, x, settings.repeats, settings.warmup),
                max_abs_diff=diff,
                onnx_file=offline_file.name,
                chunk_ms=None,
            )
            record(
                "pytorch",
                "offline",
                x.shape,
                seconds if audio else None,
                torch_offline(model, x, settings.repeats, settings.warmup, settings.threads),
                chunk_ms=None,
            )
        streamer = task.streamer(model)
        if streamer is not None:
            _streaming(streamer, task, onnx_base, settings, info, record)
    return records


def _streaming(streamer: nn.Module, task: Any, onnx_base: Path, settings: LatencySettings, info, record) -> None:
    settings.validate(hop_ms=1e3 * streamer.hop / streamer.sample_rate)
    chunk = round(settings.chunk_ms * streamer.sample_rate / 1e3)
    seconds = chunk / streamer.sample_rate
    stream_file = export_streaming(streamer, task, chunk, onnx_base.with_suffix(".stream.onnx"), info)
    session = ort_session(str(stream_file), settings.threads)
    state, rest = streamer.start(task.latency_input(settings.stream_seconds))
    runs = {
        "onnxruntime": (ort_stream_step(session), [s.numpy() for s in state], rest.numpy()),
        "pytorch": (torch_stream_step(streamer), state, rest),
    }
    for runtime, (step, start_state, audio) in runs.items():
        timing = stream_timing(step, start_state, audio, chunk, streamer.lookahead, settings.warmup)
        record(
            runtime,
            "streaming",
            (1, chunk),
            seconds,
            timing,
            chunk_ms=settings.chunk_ms,
            onnx_file=stream_file.name if runtime == "onnxruntime" else None,
        )


def measure_store(
    store: Any, settings: LatencySettings, run_keys: set[str] | None = None, force: bool = False, progress: bool = True
) -> tuple[int, int]:
    """Measure every stored candidate not yet measured (all with `force`); (measured, failed).

    A candidate that fails to export or run is reported on stderr and left unmeasured.
    """
    from tqdm import tqdm

    from bench.checkpoint import load_candidate
    from bench.registry import get_task_class

    settings.validate()
    rows = [
        r
        for r in store.rows()
        if r["status"] == "ok"
        and r.get("model_path")
        and not (r.get("info") or {}).get("reference")  # an outside model: no file rebuilds it (timed by the runner)
        and (force or not r.get("latency"))
        and (run_keys is None or r["run_key"] in run_keys)
    ]
    done = failed = 0
    for row in tqdm(rows, desc="latency", unit="candidate", disable=not progress or None, dynamic_ncols=True):
        try:
            model, info = load_candidate(store.models_dir / row["model_path"])
            task_cls = get_task_class(info["task"])
            task = task_cls(task_cls.Config(**info["task_config"]), scale=row.get("scale") or "small")
            records = measure_candidate(model, task, store.models_dir / row["model_path"], settings, info)
        except Exception as err:  # one candidate that does not export must not stop the others
            failed += 1
            print(
                f"latency: {row['task']}/{row['method']} {row['label'] or ''} (row {row['id']}): {type(err).__name__}: "
                f"{str(err).splitlines()[0] if str(err) else ''}",
                file=sys.stderr,
            )
            continue
        example = next(r for r in records if r["runtime"] == "pytorch" and r["shape"] == "offline")
        store.set_latency(row["id"], example["median_ms"], records)
        done += 1
    return done, failed
