"""One complexity counter for the whole benchmark: MACs, FLOPs and parameters.

Built on fvcore's ``FlopCountAnalysis`` (a JIT-trace based counter). fvcore counts
one fused multiply-add as one "flop", so every number it produces -- and every
handle added here -- is in MACs. We report ``flops = 2 * macs`` exactly.

fvcore (0.1.5) counts matmuls, convolutions and norms, but returns nothing for
recurrent layers, attention kernels and elementwise ops, and silently ignores a
few ops that do real arithmetic (``relu``, ``clamp``). The handles below fill
those gaps; ops that are still not understood are *reported* in
``Complexity.uncounted`` rather than quietly counted as zero.
"""

from __future__ import annotations

import contextlib
import math
import warnings
from collections import Counter
from dataclasses import dataclass
from typing import Any, Callable, Iterator, List, Optional, Union

import torch
import torch.nn as nn

with warnings.catch_warnings():
    # fvcore.nn imports its focal losses, which call the deprecated torch.jit.script.
    warnings.simplefilter("ignore", DeprecationWarning)
    from fvcore.nn import FlopCountAnalysis
    from fvcore.nn.jit_handles import get_shape

__all__ = ["Complexity", "measure", "profile_table"]

Inputs = Union[torch.Tensor, tuple]
Handle = Callable[[List[Any], List[Any]], Union[int, Counter]]


@dataclass(frozen=True)
class Complexity:
    """Complexity of one forward pass of a model on its example input.

    All operation counts are per forward pass; ``flops`` is always ``2 * macs``.
    """

    macs: int  # multiply-accumulates for one forward pass on the example input
    flops: int  # = 2 * macs
    params: int  # all parameters, shared ones counted once
    nonzero_macs: int  # MACs if zero weights were skipped
    nonzero_flops: int  # = 2 * nonzero_macs
    nonzero_params: int  # parameters that are not exactly zero
    uncounted: tuple[str, ...]  # sorted op names seen but not counted
    by_operator: dict[str, int]  # MACs per operator kind

    def to_dict(self) -> dict:
        """Return a JSON-serialisable dict of all fields."""
        return {
            "macs": self.macs,
            "flops": self.flops,
            "params": self.params,
            "nonzero_macs": self.nonzero_macs,
            "nonzero_flops": self.nonzero_flops,
            "nonzero_params": self.nonzero_params,
            "uncounted": list(self.uncounted),
            "by_operator": dict(self.by_operator),
        }


# --------------------------------------------------------------------------- handles
# Signature (fvcore): handle(inputs: List[torch._C.Value], outputs: List[torch._C.Value])
# -> number of MACs (or a Counter of MACs per op name).


def _prod(shape: Optional[List[int]]) -> int:
    return math.prod(shape) if shape else 0


def _elementwise(inputs: List[Any], outputs: List[Any]) -> int:
    """MACs = numel(output): one MAC-equivalent per output element.

    0-dim outputs are free: in a trace they are size arithmetic on scalars
    (``aten::mul`` of two sizes, ``aten::div(..., 'trunc')``), not model work.
    """
    shape = get_shape(outputs[0]) if outputs else None
    if shape is None and inputs:
        shape = get_shape(inputs[0])
    return _prod(shape)


def _reduction(inputs: List[Any], outputs: List[Any]) -> int:
    """MACs = numel(input): one per element read (mean, sum, max, pooling, ...)."""
    return _prod(get_shape(inputs[0]))


def _rnn(gates: int, gate_elementwise: int) -> Handle:
    """Build a handle for ``aten::{gru,lstm,rnn_tanh,rnn_relu}`` (both overloads)."""

    def handle(inputs: List[Any], outputs: List[Any]) -> int:
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


def _sdpa(inputs: List[Any], outputs: List[Any]) -> int:
    """Q (..., L, E), K (..., S, E), V (..., S, Ev); N = prod(Q.shape[:-2]).

    MACs = N*L*S*E (scores) + N*L*S*Ev (weighted sum) + N*L*S (softmax).
    The 1/sqrt(E) scaling and masks are not counted.
    """
    q, k, v = (get_shape(t) for t in inputs[:3])
    n = _prod(q[:-2]) if len(q) > 2 else 1
    length, e, s, ev = q[-2], q[-1], k[-2], v[-1]
    return n * length * s * (e + ev) + n * length * s


def _native_mha(inputs: List[Any], outputs: List[Any]) -> Counter:
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


def _native_encoder_layer(inputs: List[Any], outputs: List[Any]) -> Counter:
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
            "scaled_dot_product_attention": 2 * b * length * length * embed
            + b * heads * length * length,
            "layer_norm": 2 * 5 * tokens * embed,
            act: tokens * ff,
            "add": 2 * tokens * embed,
        }
    )


def _stft(inputs: List[Any], outputs: List[Any]) -> int:
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
_INPLACE_OK = set(_ELEMENTWISE_OPS) - {"softmax", "log_softmax", "prelu", "glu", "where",
                                       "maximum", "minimum", "log_sigmoid"}
_REDUCTION_OPS = """mean sum max min amax amin prod logsumexp norm linalg_vector_norm var
    std argmax argmin avg_pool1d avg_pool2d max_pool1d max_pool2d adaptive_avg_pool1d
    adaptive_max_pool1d adaptive_max_pool2d""".split()
# Pure data movement / creation / comparison: free, and must not show up as uncounted.
_FREE_OPS = """unflatten pad reflection_pad1d reflection_pad2d replication_pad1d
    replication_pad2d view_as expand_as repeat repeat_interleave flip movedim clone
    masked_fill_ fill_ zero_ ones_like empty_like alias as_strided index_select real imag
    view_as_real view_as_complex tensor_split unfold lift_fresh dropout_ feature_dropout
    alpha_dropout embedding new_ones scalar_tensor tensor numel dim lt le ne logical_not
    logical_and logical_or squeeze_ _unsafe_view resolve_conj resolve_neg hann_window
    hamming_window detach_ isnan any all _pack_padded_sequence _pad_packed_sequence""".split()

_HANDLES: dict[str, Handle] = {
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

# Operators whose cost scales with a module's weight matrix (used for nonzero_macs).
# bmm/matmul/einsum are excluded: inside attention they multiply activations.
_WEIGHTED_OPS = {"linear", "addmm", "conv", "gru", "lstm", "rnn_tanh", "rnn_relu"}


# --------------------------------------------------------------------------- analysis


def _as_tuple(example_input: Inputs) -> tuple:
    return example_input if isinstance(example_input, tuple) else (example_input,)


def _build_analysis(model: nn.Module, example_input: Inputs) -> FlopCountAnalysis:
    """FlopCountAnalysis with our handles, free ops ignored and warnings off."""
    fa = FlopCountAnalysis(model, _as_tuple(example_input))
    fa.set_op_handle(**_HANDLES)
    fa.set_op_handle(**{f"aten::{op}": None for op in _FREE_OPS})  # None = ignore
    fa.unsupported_ops_warnings(False).uncalled_modules_warnings(False)
    fa.tracer_warnings("none")  # trace-time warnings are noise for a count
    return fa


@contextlib.contextmanager
def _inference_trace(model: nn.Module) -> Iterator[None]:
    """eval + no_grad + MHA fast path off; restores every module's mode and the flag."""
    modes = [(m, m.training) for m in model.modules()]
    mha = getattr(torch.backends, "mha", None)
    fastpath = mha.get_fastpath_enabled() if mha is not None else None
    try:
        if mha is not None:
            # Route attention through ops we count (linear/bmm/sdpa) not fused kernels.
            mha.set_fastpath_enabled(False)
        model.eval()
        with torch.no_grad():
            yield
    finally:
        for m, mode in modes:
            m.training = mode
        if mha is not None:
            mha.set_fastpath_enabled(fastpath)


def _children(names: list[str]) -> dict[str, list[str]]:
    """Direct children of every canonical module name (fvcore's dotted scopes)."""
    kids: dict[str, list[str]] = {n: [] for n in names}
    for n in names:
        if n:
            parent = n.rsplit(".", 1)[0] if "." in n else ""
            kids.setdefault(parent, []).append(n)
    return kids


def _weighted_groups(fa: FlopCountAnalysis, model: nn.Module) -> list[tuple[float, list[torch.Tensor]]]:
    """(weight-matrix MACs, the matrices they use) per module that owns such ops.

    For a leaf Linear/Conv/RNN that is its MACs and its weight; for modules that own
    weights but call them functionally (nn.MultiheadAttention uses in_proj_weight and its
    never-called out_proj's weight) the matrices of uncalled children are included.
    """
    counts = fa.by_module_and_operator()
    uncalled = fa.uncalled_modules()
    modules = {fa.canonical_module_name(n): m for n, m in model.named_modules()}
    kids = _children(list(counts))

    def matrices(name: str) -> list[torch.Tensor]:
        own = [p for p in modules[name].parameters(recurse=False) if p.dim() >= 2]
        for child in kids.get(name, []):
            if child in uncalled:  # its weights were used by this module's own ops
                own += matrices(child)
        return own

    groups = []
    for name, ops in counts.items():
        own = Counter(ops)
        for child in kids.get(name, []):
            own.subtract(counts[child])
        weighted = sum(v for op, v in own.items() if op in _WEIGHTED_OPS and v > 0)
        mats = matrices(name) if weighted else []
        if sum(p.numel() for p in mats):
            groups.append((weighted, mats))
    return groups


def _nonzero_macs(total: float, groups: list[tuple[float, list[torch.Tensor]]]) -> float:
    """Total MACs with each group's weight-matrix MACs scaled by its non-zero fraction
    (norms, activations and attention are unchanged)."""
    saved = 0.0
    for weighted, mats in groups:
        nonzero = sum(int(torch.count_nonzero(p)) for p in mats)
        saved += weighted * (1 - nonzero / sum(p.numel() for p in mats))
    return total - saved


class NonzeroCounter:
    """`measure(model, example).nonzero_flops` for `model`'s current weights, traced once.

    The trace depends on shapes only; which weights are zero changes the count linearly. A
    search that zeroes weights in place and asks again (magnitude pruning's bisection)
    calls `nonzero_flops()` instead of tracing the model at every probe.
    """

    def __init__(self, model: nn.Module, example_input: Inputs):
        with _inference_trace(model):
            fa = _build_analysis(model, example_input)
            self.total = float(fa.total())
            self._groups = _weighted_groups(fa, model)
        self.flops = 2 * int(round(self.total))  # dense, as measure() gives it

    def nonzero_flops(self) -> int:
        with torch.no_grad():
            return 2 * int(round(_nonzero_macs(self.total, self._groups)))


def measure(
    model: nn.Module, example_input: Union[torch.Tensor, tuple[torch.Tensor, ...]]
) -> Complexity:
    """Count MACs/FLOPs/params of one forward pass of ``model`` on ``example_input``.

    Traced with fvcore under ``torch.no_grad()`` in eval mode (training flags are
    restored afterwards, also on error) with the fused MHA fast path disabled.
    Operators that no handle understands are returned in ``uncounted``.
    """
    with _inference_trace(model):
        fa = _build_analysis(model, example_input)
        total = float(fa.total())
        by_op = {op: int(round(v)) for op, v in sorted(fa.by_operator().items())}
        uncounted = tuple(sorted(fa.unsupported_ops()))
        nonzero = _nonzero_macs(total, _weighted_groups(fa, model))
        params = list(model.parameters())  # deduplicated: shared weights count once
        n_params = sum(p.numel() for p in params)
        n_nonzero = sum(int(torch.count_nonzero(p)) for p in params)
    macs, nz = int(round(total)), int(round(nonzero))
    return Complexity(
        macs=macs,
        flops=2 * macs,
        params=n_params,
        nonzero_macs=nz,
        nonzero_flops=2 * nz,
        nonzero_params=n_nonzero,
        uncounted=uncounted,
        by_operator=by_op,
    )


def format_count(n: float) -> str:
    """1234567 -> '1.23M'; small numbers stay exact."""
    for div, suffix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "K")):
        if abs(n) >= div:
            return f"{n / div:.2f}{suffix}"
    return str(int(round(n)))


def profile_table(model: nn.Module, example_input: Inputs, max_depth: int = 3) -> str:
    """Per-module table: name (indented by depth), params, MACs, FLOPs, % of FLOPs.

    Rows come from fvcore's ``by_module``; modules deeper than ``max_depth`` are
    folded into their parents. Ends with a total row and the uncounted operators.
    """
    with _inference_trace(model):
        fa = _build_analysis(model, example_input)
        by_module = fa.by_module()
        uncounted = fa.unsupported_ops()
        total = float(by_module[""]) or 1.0
        rows = []
        seen = set()
        for name, mod in model.named_modules():
            if mod in seen:  # shared module: fvcore reports it under one name
                continue
            seen.add(mod)
            depth = 0 if not name else name.count(".") + 1
            if depth > max_depth:
                continue
            label = "  " * depth + (name or "(model)") + f" ({type(mod).__name__})"
            macs = float(by_module.get(fa.canonical_module_name(name), 0))
            params = sum(p.numel() for p in mod.parameters())
            share = f"{100 * macs / total:.1f}%"
            rows.append((label, format_count(params), format_count(macs), format_count(2 * macs), share))
        all_params = sum(p.numel() for p in model.parameters())
    macs = float(by_module[""])
    rows.append(("total", format_count(all_params), format_count(macs), format_count(2 * macs), "100.0%"))
    head = ("module", "params", "MACs", "FLOPs", "% FLOPs")
    widths = [max(len(r[i]) for r in rows + [head]) for i in range(len(head))]

    def line(r: tuple) -> str:
        return "  ".join(
            c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths))
        )

    rule = "-" * len(line(head))
    missing = ", ".join(f"{op} (x{n})" for op, n in sorted(uncounted.items())) or "none"
    return "\n".join(
        [
            "MACs = multiply-accumulates; FLOPs = 2 x MACs, per forward pass on the example input",
            line(head),
            rule,
            *[line(r) for r in rows[:-1]],
            rule,
            line(rows[-1]),
            f"uncounted operators: {missing}",
        ]
    )
