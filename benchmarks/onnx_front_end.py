"""ONNX forms of the 512-point, 400-sample-window, 160-hop power spectrum, timed in ONNX Runtime.

    python benchmarks/onnx_front_end.py [--seconds 10] [--rounds 5] [--repeats 10]

Forms: ONNX Runtime's STFT operator; its DFT operator on frames cut beforehand (the cutting
not timed); a strided convolution with the full windowed DFT basis; and the folded matrix
products the export uses (`tasks.speech.frontend._dft_power`). One thread; rounds
alternate the forms so load from elsewhere hits all alike; median of the rounds' medians.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import warnings

import numpy as np
import onnx
import torch
from onnx import TensorProto, helper

from bench.latency import ort_session, time_calls
from tasks.speech.frontend import HOP, N_FFT, WIN, _dft_power, stft_power


class StftOperator(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.register_buffer("window", torch.hann_window(WIN))

    def forward(self, x):
        pairs = torch.stft(x, N_FFT, HOP, WIN, self.window, center=True, return_complex=False)
        return pairs.square().sum(-1)


class FullBasisConv(torch.nn.Module):
    def __init__(self):
        super().__init__()
        offset, k = (N_FFT - WIN) // 2, np.arange(N_FFT // 2 + 1)[:, None]
        angle = 2 * np.pi * k * (np.arange(WIN) + offset) / N_FFT
        w = torch.hann_window(WIN).double().numpy()
        basis = np.concatenate([np.cos(angle) * w, -np.sin(angle) * w])[:, None, :]
        self.register_buffer("basis", torch.from_numpy(basis).float())

    def forward(self, x):
        offset, bins = (N_FFT - WIN) // 2, N_FFT // 2 + 1
        x = torch.nn.functional.pad(x[:, None], (N_FFT // 2, N_FFT // 2), mode="reflect")
        y = torch.nn.functional.conv1d(x[:, :, offset : x.shape[-1] - offset], self.basis, stride=HOP)
        return y[:, :bins].square() + y[:, bins:].square()


class Folded(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.register_buffer("window", torch.hann_window(WIN))

    def forward(self, x):
        return _dft_power(x, N_FFT, HOP, self.window, list(range(N_FFT // 2 + 1)), center=True)


def dft_operator(path: str) -> None:
    """ONNX's DFT (opset 20) over ready-cut frames (1, frames, 512, 1), one-sided."""
    node = helper.make_node("DFT", ["x", "", "axis"], ["y"], onesided=1)
    axis = helper.make_tensor("axis", TensorProto.INT64, [], [2])
    graph = helper.make_graph(
        [node],
        "dft",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, None, N_FFT, 1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        initializer=[axis],
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 20)]), path)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--repeats", type=int, default=10)
    args = p.parse_args()
    torch.set_num_threads(1)
    x = 0.1 * torch.randn(1, round(args.seconds * 16000), generator=torch.Generator().manual_seed(0))
    reference = stft_power(x, N_FFT, HOP, torch.hann_window(WIN)).numpy()
    frames = np.ascontiguousarray(
        torch.nn.functional.pad(x[:, None], (256, 256), mode="reflect")[0, 0]
        .unfold(0, N_FFT, HOP)
        .numpy()[None, :, :, None]
    )
    feeds, sessions = {}, {}
    with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for name, module in (
            ("STFT operator", StftOperator()),
            ("strided convolution, full basis", FullBasisConv()),
            ("folded products (exported form)", Folded()),
        ):
            path = os.path.join(tmp, f"{len(sessions)}.onnx")
            torch.onnx.export(
                module,
                (x,),
                path,
                dynamo=False,
                opset_version=17,
                input_names=["x"],
                dynamic_axes={"x": {1: "samples"}},
            )
            sessions[name], feeds[name] = ort_session(path), {"x": x.numpy()}
            got = sessions[name].run(None, feeds[name])[0]
            assert got.shape == reference.shape and np.allclose(got, reference, rtol=1e-3, atol=1e-6), name
        path = os.path.join(tmp, "dft.onnx")
        dft_operator(path)
        sessions["DFT operator on cut frames"], feeds["DFT operator on cut frames"] = ort_session(path), {"x": frames}
        results = {name: [] for name in sessions}
        for _ in range(args.rounds):
            for name, session in sessions.items():
                t = time_calls(lambda: session.run(None, feeds[name]), args.repeats, 2)
                results[name].append((t.median_ms, t.cpu_median_ms))
    print(
        f"{args.seconds:g} s of audio, {reference.shape[-1]} frames; median of {args.rounds} rounds of "
        f"{args.repeats} calls; load average {os.getloadavg()[0]:.2f}"
    )
    for name, values in results.items():
        wall, cpu = statistics.median(v[0] for v in values), statistics.median(v[1] for v in values)
        print(f"  {name:<34} wall {wall:7.2f} ms   CPU {cpu:7.2f} ms")


if __name__ == "__main__":
    main()
