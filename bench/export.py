"""ONNX export of candidates: the plain module, its dynamic axes, and what the file holds.

The exporter is torch's TorchScript-based one (``dynamo=False``): it maps a recurrent layer
to ONNX's own GRU/LSTM operator, so any length runs through it, where the torch.export
path unrolls the recurrence (or fails to decompose it) at the example's length.
Batch and time (the last input axis of audio tasks) are dynamic.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

OPSET = 17  # the first opset with an STFT operator
FORMAT = "smallspeech-bench/onnx-v1"


class ExportError(RuntimeError):
    """The model could not be exported or does not match its ONNX form; one line."""


def export_onnx(
    module: nn.Module,
    inputs: Sequence[torch.Tensor],
    path: str | Path,
    *,
    input_names: Sequence[str],
    output_names: Sequence[str],
    dynamic_axes: dict[str, dict[int, str]],
    metadata: dict[str, Any],
) -> Path:
    """Write `module` (in eval mode) as ONNX with `metadata` (values JSON-encoded) in the file."""
    import onnx

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    modes = [(m, m.training) for m in module.modules()]  # restored one by one: a wrapper may hold an eval-mode model
    module.eval()
    try:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # tracer notes on shape arithmetic; the round trip is what is checked
            torch.onnx.export(
                module,
                tuple(inputs),
                str(path),
                dynamo=False,
                opset_version=OPSET,
                input_names=list(input_names),
                output_names=list(output_names),
                dynamic_axes=dynamic_axes,
            )
    except Exception as err:
        raise ExportError(
            f"ONNX export of {type(module).__name__} failed: {type(err).__name__}: {str(err).splitlines()[0]}"
        ) from err
    finally:
        for m, training in modes:
            m.training = training
    proto = onnx.load(str(path))
    for key, value in {"format": FORMAT, "torch": torch.__version__, **metadata}.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value if isinstance(value, str) else json.dumps(value)
    onnx.save(proto, str(path))
    return path


def read_metadata(path: str | Path) -> dict[str, Any]:
    """The metadata an exported file carries (JSON values decoded)."""
    import onnx

    out = {}
    for entry in onnx.load(str(path), load_external_data=False).metadata_props:
        try:
            out[entry.key] = json.loads(entry.value)
        except json.JSONDecodeError:
            out[entry.key] = entry.value
    return out


def export_offline(model: nn.Module, task: Any, path: str | Path, info: dict[str, Any] | None = None) -> Path:
    """The whole model on a recording (or one example): input ``input``, output ``output``."""
    example = task.example_input()
    with torch.no_grad():
        out = model(example)
    audio = bool(task.example_seconds)
    in_axes = {0: "batch", example.dim() - 1: "samples"} if audio else {0: "batch"}
    out_axes = {0: "batch", **({out.dim() - 1: "frames"} if audio and out.dim() > 1 else {})}
    meta = {
        "task": task.name,
        "shape": "offline",
        "input": "waveform" if audio else "features",
        "front_end_included": audio,
        "sample_rate": getattr(task, "sample_rate", None),
        **_candidate_meta(info),
    }
    return export_onnx(
        model,
        [example],
        path,
        input_names=["input"],
        output_names=["output"],
        dynamic_axes={"input": in_axes, "output": out_axes},
        metadata=meta,
    )


def export_streaming(
    streamer: nn.Module, task: Any, chunk_samples: int, path: str | Path, info: dict[str, Any] | None = None
) -> Path:
    """The streaming step: inputs ``chunk`` and the state, outputs ``scores`` and the new state."""
    state, _ = streamer.start(task.latency_input(1.0))
    chunk = torch.zeros(1, chunk_samples)
    names = list(streamer.state_names)
    meta = {
        "task": task.name,
        "shape": "streaming",
        "input": "waveform chunk",
        "front_end_included": True,
        "sample_rate": streamer.sample_rate,
        "hop": streamer.hop,
        "lookahead": streamer.lookahead,
        "state": names,
        **_candidate_meta(info),
    }
    return export_onnx(
        streamer,
        [chunk, *state],
        path,
        input_names=["chunk", *names],
        output_names=["scores", *(f"next_{n}" for n in names)],
        dynamic_axes={"chunk": {1: "samples"}, "scores": {1: "frames"}},
        metadata=meta,
    )


def _candidate_meta(info: dict[str, Any] | None) -> dict[str, Any]:
    if not info:
        return {}
    return {"widths": info.get("widths"), "task_config": info.get("task_config"), "candidate": info.get("meta")}
