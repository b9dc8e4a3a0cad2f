"""`bench export` and `bench latency`, and the measurement phase that ends `bench run` and `bench sweep`."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from bench.config import ConfigError
from bench.measure import LatencySettings


def _add_latency_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("latency measurement (after all training, in this process)")
    d = LatencySettings()
    g.add_argument(
        "--seconds",
        type=float,
        default=d.offline_seconds,
        help="seconds of audio per offline call (besides the 1 s example)",
    )
    g.add_argument(
        "--chunk-ms", type=float, default=d.chunk_ms, help="streaming chunk length, a multiple of the model's hop"
    )
    g.add_argument(
        "--stream-seconds", type=float, default=d.stream_seconds, help="seconds of audio fed through the stream"
    )
    g.add_argument("--repeats", type=int, default=d.repeats, help="timed offline calls")
    g.add_argument("--warmup", type=int, default=d.warmup, help="untimed calls (or chunks) first")
    g.add_argument(
        "--latency-threads", type=int, default=d.threads, help="threads of ONNX Runtime and PyTorch while timing"
    )


def latency_settings(args: argparse.Namespace) -> LatencySettings:
    """The settings the flags give (defaults where a command has none of them)."""
    d = LatencySettings()
    settings = LatencySettings(
        getattr(args, "seconds", d.offline_seconds),
        getattr(args, "chunk_ms", d.chunk_ms),
        getattr(args, "stream_seconds", d.stream_seconds),
        getattr(args, "repeats", d.repeats),
        getattr(args, "warmup", d.warmup),
        getattr(args, "latency_threads", d.threads),
    )
    settings.validate()
    return settings


def add_parsers(sub, formatter, add_store) -> None:
    export = sub.add_parser(
        "export", help="write a stored candidate as ONNX (dynamic batch and time axes)", formatter_class=formatter
    )
    src = export.add_mutually_exclusive_group(required=True)
    src.add_argument(
        "--row", type=int, help="id of a result row in the store (`bench results --format json` shows ids)"
    )
    src.add_argument("--candidate", metavar="PATH", help="a candidate file (.pt) saved by `bench run`")
    export.add_argument("--out", metavar="PATH", default=None, help="the .onnx file; unset: beside the candidate")
    export.add_argument(
        "--chunk-ms",
        type=float,
        default=LatencySettings().chunk_ms,
        help="also write the streaming step (NAME.stream.onnx) for this chunk length, where the task streams",
    )
    add_store(export)

    latency = sub.add_parser(
        "latency",
        help="measure stored candidates in ONNX Runtime and PyTorch (one thread, after warm-up)",
        formatter_class=formatter,
        epilog="Run it with nothing else busy on the machine's cores.",
    )
    add_store(latency)
    latency.add_argument("--force", action="store_true", help="measure candidates already measured again")
    latency.add_argument("--quiet", action="store_true", help="no progress bar")
    _add_latency_options(latency)


def measure_phase(store, run_keys: set[str] | None, args: argparse.Namespace, force: bool = False) -> int:
    """Measure the candidates not yet measured; print one line; return how many failed."""
    from bench.measure import measure_store

    settings = latency_settings(args)
    print(
        f"measuring latency of stored candidates ({settings.threads} thread(s), after all training)...",
        file=sys.stderr,
    )
    done, failed = measure_store(store, settings, run_keys, force=force, progress=not getattr(args, "quiet", False))
    print(f"latency: {done} candidate(s) measured, {failed} failed", file=sys.stderr)
    return failed


def cmd_latency(args: argparse.Namespace) -> int:
    from bench.store import ResultStore

    return 1 if measure_phase(ResultStore(args.store), None, args, force=args.force) else 0


def cmd_export(args: argparse.Namespace) -> int:
    from bench.checkpoint import load_candidate
    from bench.export import ExportError, export_offline, export_streaming
    from bench.registry import get_task_class
    from bench.store import ResultStore

    path = Path(args.candidate) if args.candidate else _row_model(ResultStore(args.store), args.row)
    if not path.is_file():
        raise ConfigError(f"candidate file {path} does not exist; give a .pt file saved by `bench run`")
    try:
        model, info = load_candidate(path)
    except Exception as err:
        raise ConfigError(f"{path} is not a candidate file: {str(err).splitlines()[0]}") from None
    task_cls = get_task_class(info["task"])
    task = task_cls(task_cls.Config(**info["task_config"]))
    out = Path(args.out) if args.out else path.with_suffix(".onnx")
    if out.suffix != ".onnx":
        raise ConfigError(f"--out {out} must end in .onnx")
    LatencySettings(chunk_ms=args.chunk_ms).validate()
    try:
        print(export_offline(model, task, out, info))
        streamer = task.streamer(model)
        if streamer is not None:
            LatencySettings(chunk_ms=args.chunk_ms).validate(hop_ms=1e3 * streamer.hop / streamer.sample_rate)
            chunk = round(args.chunk_ms * streamer.sample_rate / 1e3)
            print(export_streaming(streamer, task, chunk, out.with_suffix(".stream.onnx"), info))
    except ExportError as err:
        print(f"bench export: {err}", file=sys.stderr)
        return 1
    return 0


def _row_model(store, row_id: int) -> Path:
    row = next((r for r in store.rows() if r["id"] == row_id), None)
    if row is None:
        raise ConfigError(f"no result row {row_id} in {store.location}; `bench results --format json` lists the ids")
    if not row.get("model_path"):
        raise ConfigError(
            f"result row {row_id} ({row['task']}/{row['method']}) has no saved model; choose a row with a model_path"
        )
    return store.models_dir / row["model_path"]


COMMANDS = {"export": cmd_export, "latency": cmd_latency}
