"""fvcore op handles for what its counter misses: recurrent layers, attention kernels, the
STFT, elementwise and reduction ops (fvcore 0.1.5 returns nothing for them, and silently
ignores ``relu`` and ``clamp``), and the ops that are free (data movement, creation,
comparison) so they are not reported as uncounted. All counts are MACs, as fvcore's.

`bench.complexity` installs `HANDLES` and ignores `FREE_OPS` on every analysis.
"""

from __future__ import annotations

import math
import warnings
from collections import Counter
from collections.abc import Callable
from typing import Any

with warnings.catch_warnings():
    # fvcore.nn imports its focal losses, which call the deprecated torch.jit.script.
    warnings.simplefilter("ignore", DeprecationWarning)
    from fvcore.nn.jit_handles import get_shape

Handle = Callable[[list[Any], list[Any]], int | Counter]

# Signature (fvcore): handle(inputs: List[torch._C.Value], outputs: List[torch._C.Value])
# -> number of MACs (or a Counter of MACs per op name).


def _prod(shape: list[int] | None) -> int:
    return math.prod(shape) if shape else 0


def _elementwise(inputs: list[Any], outputs: list[Any]) -> int:
    """MACs = numel(output): one MAC-equivalent per output element.

    0-dim outputs are free: in a trace they are size arithmetic on scalars
    (``aten::mul`` of two sizes, ``aten::div(..., 'trunc')``), not model work.
    """
    shape = get_shape(outputs[0]) if outputs else None
    if shape is None and inputs:
        shape = get_shape(inputs[0])
    return _prod(shape)


def _reduction(inputs: list[Any], outputs: list[Any]) -> int:
    """MACs = numel(input): one per element read (mean, sum, max, pooling, ...)."""
    return _prod(get_shape(inputs[0]))


def _rnn(gates: int, gate_elementwise: int) -> Handle:
    """Build a handle for ``aten::{gru,lstm,rnn_tanh,rnn_relu}`` (both overloads)."""

    def handle(inputs: list[Any], outputs: list[Any]) -> int:
        """MACs = T*B * sum_{layer, dir} [gates*(I_l*H + H*H) + e*H].

        gates = 3 (GRU), 4 (LSTM), 1 (RNN); I_0 = input size, I_l = H*num_dirs
        for l > 0; e = elementwise gate work per hidden unit: GRU 3
        (reset product, 2 interpolation products), LSTM 3 (f*c, i*g, o*tanh(c)),
        RNN 0. Biases and nonlinearities are not counted (fvcore convention).
        With LSTM ``proj_size`` the exact weight-matrix sizes are used instead.
        """
        x = get_shape(inputs[0])
        # Overloads: .input(x[T,B,I] or [B,T,I], hx, params, has_biases, num_layers,
        # dropout, train, bidirectional, batch_first) and .data (packed sequence):
        # (data[sum(T_b), I], batch_sizes, hx, params, has_biases, num_layers,
        # dropout, train, bidirectional).
        packed = len(x) == 2
        hx, params = (inputs[2], inputs[3]) if packed else (inputs[1], inputs[2])
        flags = inputs[4:9] if packed else inputs[3:9]
        num_layers = int(flags[1].toIValue())
        num_dirs = 2 if flags[4].toIValue() else 1
        if packed:
            steps = x[0]  # sum of the sequence lengths = T*B without padding
        else:
            batch_first = bool(flags[5].toIValue())
            t, b = (x[1], x[0]) if batch_first else (x[0], x[1])
            steps = t * b
        weights = [get_shape(v) for v in params.node().inputs()]
        matrices = [s for s in weights if s is not None and len(s) == 2]
        if matrices:  # exact: every weight matrix is used once per step
            hidden = matrices[0][0] // gates  # weight_ih_l0 is (gates*H, I)
            per_step = sum(r * c for r, c in matrices)
        else:  # params list not shaped: fall back to the closed-form formula
            if hx.type().kind() == "ListType":  # LSTM: [h, c]; c has size H
                hx = list(hx.node().inputs())[-1]
            hidden = get_shape(hx)[-1]
            per_step = 0
            for layer in range(num_layers):
                in_size = x[-1] if layer == 0 else hidden * num_dirs
                per_step += num_dirs * gates * (in_size * hidden + hidden * hidden)
        per_step += num_layers * num_dirs * gate_elementwise * hidden
        return steps * per_step

    return handle


def _sdpa(inputs: list[Any], outputs: list[Any]) -> int:
    """Q (..., L, E), K (..., S, E), V (..., S, Ev); N = prod(Q.shape[:-2]).

    MACs = N*L*S*E (scores) + N*L*S*Ev (weighted sum) + N*L*S (softmax).
    The 1/sqrt(E) scaling and masks are not counted.
    """
    q, k, v = (get_shape(t) for t in inputs[:3])
    n = _prod(q[:-2]) if len(q) > 2 else 1
    length, e, s, ev = q[-2], q[-1], k[-2], v[-1]
    return n * length * s * (e + ev) + n * length * s


def _native_mha(inputs: list[Any], outputs: list[Any]) -> Counter:
    """Fused ``aten::_native_multi_head_attention`` (MHA fast path), B*L queries, S keys.

    linear = B*(L*E*E + 2*S*E*E) (in-proj q, k, v) + B*L*E*E (out-proj);
    scaled_dot_product_attention = B*L*S*2E + B*heads*L*S (softmax).
    Same terms as the unfused path through ``aten::scaled_dot_product_attention``.
    """
    q, k = get_shape(inputs[0]), get_shape(inputs[1])
    embed, heads = int(inputs[3].toIValue()), int(inputs[4].toIValue())
    b, length, s = (_prod(q[:-2]) if len(q) > 2 else 1), q[-2], k[-2]
    linear = b * (length * embed * embed + 2 * s * embed * embed) + b * length * embed * embed
    attn = b * length * s * 2 * embed + b * heads * length * s
    return Counter({"linear": linear, "scaled_dot_product_attention": attn})


def _native_encoder_layer(inputs: list[Any], outputs: list[Any]) -> Counter:
    """Fused ``aten::_transformer_encoder_layer_fwd`` (encoder fast path), src (B, L, E).

    linear = 4*B*L*E*E (q, k, v, out) + 2*B*L*E*F (feed-forward, F = dim_feedforward);
    scaled_dot_product_attention = 2*B*L*L*E + B*heads*L*L; layer_norm = 2 * 5*B*L*E
    (fvcore's affine norm cost); relu/gelu = B*L*F; add = 2*B*L*E (residuals).
    """
    src = get_shape(inputs[0])
    embed, heads = int(inputs[1].toIValue()), int(inputs[2].toIValue())
    ff = get_shape(inputs[14])[0]  # ffn_weight_1 is (F, E)
    tokens, length = _prod(src[:-1]), src[-2]
    b = tokens // length
    act = "gelu" if inputs[7].toIValue() else "relu"
    return Counter(
        {
            "linear": 4 * tokens * embed * embed + 2 * tokens * embed * ff,
            "scaled_dot_product_attention": 2 * b * length * length * embed + b * heads * length * length,
            "layer_norm": 2 * 5 * tokens * embed,
            act: tokens * ff,
            "add": 2 * tokens * embed,
        }
    )


def _stft(inputs: list[Any], outputs: list[Any]) -> int:
    """MACs = frames * (n_fft + 2*n_fft*log2(n_fft)).

    n_fft multiplies apply the window; 2*n_fft*log2(n_fft) is a real-FFT estimate.
    frames = batch * output frames (output is (..., n_freq, frames[, 2])).
    """
    n_fft = int(inputs[1].toIValue())
    out = get_shape(outputs[0])
    if outputs[0].type().scalarType() not in ("ComplexFloat", "ComplexDouble", "ComplexHalf"):
        out = out[:-1]  # return_complex=False appends a (real, imag) axis
    frames = _prod(out[:-2]) * out[-1] if len(out) > 2 else out[-1]
    return int(round(frames * (n_fft + 2 * n_fft * math.log2(n_fft))))


_ELEMENTWISE_OPS = """add sub mul div rsub sigmoid tanh relu gelu silu softmax log_softmax
    exp log pow sqrt rsqrt abs clamp neg hardtanh leaky_relu elu prelu hardswish
    hardsigmoid softplus mish glu sin cos reciprocal erf square maximum minimum where
    addcmul log_sigmoid clamp_min clamp_max""".split()
_INPLACE_OK = set(_ELEMENTWISE_OPS) - {
    "softmax",
    "log_softmax",
    "prelu",
    "glu",
    "where",
    "maximum",
    "minimum",
    "log_sigmoid",
}
_REDUCTION_OPS = """mean sum max min amax amin prod logsumexp norm linalg_vector_norm var
    std argmax argmin avg_pool1d avg_pool2d max_pool1d max_pool2d adaptive_avg_pool1d
    adaptive_max_pool1d adaptive_max_pool2d""".split()
# Pure data movement / creation / comparison: free, and must not show up as uncounted.
FREE_OPS = """unflatten pad reflection_pad1d reflection_pad2d replication_pad1d
    replication_pad2d view_as expand_as repeat repeat_interleave flip movedim clone
    masked_fill_ fill_ zero_ ones_like empty_like alias as_strided index_select real imag
    view_as_real view_as_complex tensor_split unfold lift_fresh dropout_ feature_dropout
    alpha_dropout embedding new_ones scalar_tensor tensor numel dim lt le ne logical_not
    logical_and logical_or squeeze_ _unsafe_view resolve_conj resolve_neg hann_window
    hamming_window detach_ isnan any all _pack_padded_sequence _pad_packed_sequence""".split()

HANDLES: dict[str, Handle] = {
    **{f"aten::{op}": _elementwise for op in _ELEMENTWISE_OPS},
    **{f"aten::{op}_": _elementwise for op in _INPLACE_OK},
    **{f"aten::{op}": _reduction for op in _REDUCTION_OPS},
    "aten::gru": _rnn(3, 3),
    "aten::lstm": _rnn(4, 3),
    "aten::rnn_tanh": _rnn(1, 0),
    "aten::rnn_relu": _rnn(1, 0),
    "aten::scaled_dot_product_attention": _sdpa,
    "aten::_native_multi_head_attention": _native_mha,
    "aten::_transformer_encoder_layer_fwd": _native_encoder_layer,
    "aten::stft": _stft,
}
