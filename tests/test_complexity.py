"""Tests for bench.complexity: every expected count is a hand formula written here.

Units: MACs (one multiply-accumulate = 1); FLOPs = 2 * MACs.
"""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from bench.complexity import Complexity, NonzeroCounter, measure, profile_table


def check(c: Complexity, expected_macs: float) -> None:
    assert c.macs == pytest.approx(expected_macs, rel=0.01)
    assert c.flops == 2 * c.macs
    assert c.nonzero_flops == 2 * c.nonzero_macs


class SelfAttention(nn.Module):
    """nn.MultiheadAttention called as self-attention (default need_weights=True)."""

    def __init__(self, d: int = 64, heads: int = 4) -> None:
        super().__init__()
        self.attn = nn.MultiheadAttention(d, heads, batch_first=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.attn(x, x, x)[0]


def test_linear() -> None:
    # fvcore does not count the bias add; we keep that convention.
    c = measure(nn.Linear(16, 64), torch.randn(1, 16))
    check(c, 16 * 64)
    assert c.params == 16 * 64 + 64


def test_conv1d() -> None:
    cin, cout, k, length = 8, 16, 5, 100
    out_len = length  # padding 2, stride 1, k 5 keeps the length
    c = measure(nn.Conv1d(cin, cout, k, padding=2), torch.randn(1, cin, length))
    check(c, out_len * cout * cin * k)


def test_conv2d() -> None:
    cin, cout, k, h, w = 3, 8, 3, 32, 32
    out_h, out_w = 16, 16  # stride 2, padding 1: floor((32 + 2 - 3) / 2) + 1
    c = measure(nn.Conv2d(cin, cout, k, stride=2, padding=1), torch.randn(1, cin, h, w))
    check(c, out_h * out_w * cout * cin * k * k)


def gru_macs(inp: int, hid: int, layers: int, dirs: int, steps: int) -> int:
    total = 0
    for layer in range(layers):
        layer_in = inp if layer == 0 else hid * dirs
        # 3 gates x (input matmul + recurrent matmul) + 3*H elementwise gate work
        total += dirs * (3 * (layer_in * hid + hid * hid) + 3 * hid)
    return total * steps


@pytest.mark.parametrize("layers,bidir", [(1, False), (2, False), (1, True), (2, True)])
def test_gru(layers: int, bidir: bool) -> None:
    batch, t, inp, hid = 2, 100, 40, 64
    model = nn.GRU(inp, hid, num_layers=layers, batch_first=True, bidirectional=bidir)
    c = measure(model, torch.randn(batch, t, inp))
    check(c, gru_macs(inp, hid, layers, 2 if bidir else 1, t * batch))
    assert c.uncounted == ()


def test_lstm_seq_first() -> None:
    t, batch, inp, hid = 100, 1, 40, 64
    c = measure(nn.LSTM(inp, hid), torch.randn(t, batch, inp))
    # 4 gates x (input + recurrent matmul) + 3*H elementwise (f*c, i*g, o*tanh c)
    check(c, t * batch * (4 * (inp * hid + hid * hid) + 3 * hid))


def test_packed_gru_counts_real_steps() -> None:
    from torch.nn.utils.rnn import pack_padded_sequence

    class Packed(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.gru = nn.GRU(40, 64, batch_first=True)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            packed = pack_padded_sequence(x, torch.tensor([100, 50]), batch_first=True)
            return self.gru(packed)[1]

    c = measure(Packed(), torch.randn(2, 100, 40))
    check(c, gru_macs(40, 64, 1, 1, 100 + 50))  # padding steps are not computed
    assert c.uncounted == ()


def test_rnn_relu() -> None:
    t, inp, hid = 50, 20, 32
    c = measure(nn.RNN(inp, hid, nonlinearity="relu", batch_first=True), torch.randn(1, t, inp))
    check(c, t * (inp * hid + hid * hid))


def test_multihead_attention() -> None:
    length, d, heads = 100, 64, 4
    c = measure(SelfAttention(d, heads), torch.randn(1, length, d))
    in_proj = 3 * length * d * d
    out_proj = length * d * d
    scores = length * length * d  # heads * L * L * (d / heads)
    weighted_sum = length * length * d
    softmax = heads * length * length
    q_scaling = length * d  # q * 1/sqrt(d_head) on the unfused (need_weights) path
    check(c, in_proj + out_proj + scores + weighted_sum + softmax + q_scaling)
    assert c.uncounted == ()


def transformer_layer_macs(length: int, d: int, heads: int, ff: int) -> int:
    in_proj = 3 * length * d * d
    out_proj = length * d * d
    scores = length * length * d
    weighted_sum = length * length * d
    softmax = heads * length * length
    layer_norms = 2 * 5 * length * d  # fvcore: 5 per element for an affine norm
    ff1 = length * d * ff
    relu = length * ff
    ff2 = length * ff * d
    residual_adds = 2 * length * d
    return in_proj + out_proj + scores + weighted_sum + softmax + layer_norms + ff1 + relu + ff2 + residual_adds


def test_transformer_encoder_layer() -> None:
    length, d, heads, ff = 100, 64, 4, 256
    layer = nn.TransformerEncoderLayer(d_model=d, nhead=heads, dim_feedforward=ff, batch_first=True)
    c = measure(layer, torch.randn(1, length, d))
    check(c, transformer_layer_macs(length, d, heads, ff))
    assert c.uncounted == ()


def test_fused_fast_path_handles_match() -> None:
    """The handles for the fused MHA/encoder kernels give the same count (1%)."""
    from bench.complexity import _build_analysis

    length, d, heads, ff = 100, 64, 4, 256
    x = torch.randn(1, length, d)
    layer = nn.TransformerEncoderLayer(d, heads, ff, batch_first=True).eval()
    mha = SelfAttention(d, heads).eval()
    assert torch.backends.mha.get_fastpath_enabled()
    with torch.no_grad():
        fa_layer = _build_analysis(layer, x)
        fa_mha = _build_analysis(mha, x)
        expected = transformer_layer_macs(length, d, heads, ff)
        assert fa_layer.total() == pytest.approx(expected, rel=0.01)
        assert fa_mha.total() == pytest.approx(measure(mha, x).macs, rel=0.01)
        assert not fa_layer.unsupported_ops() and not fa_mha.unsupported_ops()
    assert torch.backends.mha.get_fastpath_enabled()  # measure restored it


def test_stft_front_end() -> None:
    n_fft, hop, samples, batch = 400, 160, 16000, 2

    class Spec(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            window = torch.hann_window(n_fft)
            return torch.stft(x, n_fft, hop, window=window, return_complex=True).abs()

    frames = samples // hop + 1  # center=True
    per_frame = n_fft + 2 * n_fft * torch.log2(torch.tensor(float(n_fft))).item()
    abs_ = batch * (n_fft // 2 + 1) * frames
    c = measure(Spec(), torch.randn(batch, samples))
    check(c, batch * frames * per_frame + abs_)
    assert c.uncounted == ()


def test_params_and_nonzero_linear() -> None:
    lin = nn.Linear(16, 64)
    with torch.no_grad():
        lin.weight[:, :8] = 0.0  # half of the weights
    c = measure(lin, torch.randn(1, 16))
    assert c.params == 16 * 64 + 64
    assert c.nonzero_params == 8 * 64 + 64  # bias is non-zero
    check(c, 16 * 64)  # dense count unchanged
    assert c.nonzero_macs == pytest.approx(8 * 64, rel=0.01)


def test_nonzero_gru_and_attention() -> None:
    gru = nn.GRU(40, 64, batch_first=True)
    with torch.no_grad():
        gru.weight_hh_l0.zero_()
    c = measure(gru, torch.randn(1, 10, 40))
    frac = (192 * 40) / (192 * 40 + 192 * 64)  # non-zero share of the weight matrices
    assert c.nonzero_macs == pytest.approx(c.macs * frac, rel=0.01)

    length, d = 100, 64
    mha = SelfAttention(d, 4)
    with torch.no_grad():
        mha.attn.out_proj.weight.zero_()  # used functionally by nn.MultiheadAttention
    c = measure(mha, torch.randn(1, length, d))
    assert c.macs - c.nonzero_macs == pytest.approx(length * d * d, rel=0.01)


def test_nonzero_counter_traced_once_follows_weights_zeroed_in_place() -> None:
    """What magnitude pruning's bisection relies on: the same count as `measure`, after
    in-place changes to the weights, including functionally used attention weights."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(32, 64), nn.ReLU(), SelfAttention(64, 4), nn.Linear(64, 8))
    x = torch.randn(1, 20, 32)
    counter = NonzeroCounter(model, x)
    assert counter.nonzero_flops() == measure(model, x).nonzero_flops
    weights = [p for p in model.parameters() if p.dim() >= 2]
    for share in (0.3, 0.7, 1.0):
        with torch.no_grad():
            for p in weights:
                p.masked_fill_(torch.rand_like(p) < share, 0.0)
        expected = measure(model, x).nonzero_flops
        assert expected < counter.total * 2  # the weights' zeros are seen
        assert counter.nonzero_flops() == expected


def test_shared_parameters_counted_once() -> None:
    lin = nn.Linear(8, 8)
    c = measure(nn.Sequential(lin, nn.Tanh(), lin), torch.randn(1, 8))
    assert c.params == 8 * 8 + 8
    check(c, 2 * 8 * 8 + 8)  # two matmuls + tanh


def test_uncounted_and_data_movement() -> None:
    class Odd(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.drop = nn.Dropout(0.1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            y = x.transpose(1, 2).reshape(2, -1).unflatten(-1, (10, 40))
            y = torch.cat([y, y[:, :2]], dim=1).contiguous().view(2, -1)
            y = self.drop(F.pad(y, (1, 1)))
            return torch.fft.rfft(y).abs()  # rfft: nobody counts it

    c = measure(Odd(), torch.randn(2, 40, 10))
    assert c.uncounted == ("aten::fft_rfft",)
    padded = 12 * 40 + 2  # view (2, 480), then pad 1 each side
    assert c.macs == 2 * (padded // 2 + 1)  # only abs of the rfft bins is counted


def test_measure_restores_training_mode() -> None:
    model = nn.Sequential(nn.Linear(4, 4), nn.Dropout(0.5))
    model.train()
    model[1].eval()  # mixed modes are restored per module
    measure(model, torch.randn(1, 4))
    assert model.training and model[0].training and not model[1].training

    class Boom(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            raise RuntimeError("boom")

    boom = Boom().train()
    with pytest.raises(RuntimeError):
        measure(boom, torch.randn(1))
    assert boom.training
    assert torch.backends.mha.get_fastpath_enabled()


def test_to_dict_is_json() -> None:
    d = measure(nn.Linear(16, 64), torch.randn(1, 16)).to_dict()
    assert json.loads(json.dumps(d))["flops"] == 2 * 16 * 64
    assert d["by_operator"] == {"linear": 16 * 64}


def test_profile_table() -> None:
    model = nn.Sequential(nn.Conv1d(8, 16, 5, padding=2), nn.ReLU(), nn.Sequential(nn.Flatten(), nn.Linear(1600, 10)))
    table = profile_table(model, torch.randn(1, 8, 100), max_depth=2)
    assert "MACs = multiply-accumulates; FLOPs = 2 x MACs" in table
    for name in ("0 (Conv1d)", "1 (ReLU)", "2 (Sequential)", "2.1 (Linear)"):
        assert name in table
    total_macs = 100 * 16 * 8 * 5 + 1600 + 1600 * 10  # conv + relu + linear
    total = next(line for line in table.splitlines() if line.startswith("total"))
    assert f"{total_macs / 1e3:.2f}K" in total and "100.0%" in total
    assert table.splitlines()[-1] == "uncounted operators: none"
    assert "2.1 (Linear)" not in profile_table(model, torch.randn(1, 8, 100), max_depth=1)
