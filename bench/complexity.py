"""One complexity counter for the whole benchmark: MACs, FLOPs and parameters.

Built on fvcore's ``FlopCountAnalysis`` (a JIT-trace based counter). fvcore counts
one fused multiply-add as one "flop", so every number it produces -- and every
handle added here -- is in MACs. We report ``flops = 2 * macs`` exactly.

fvcore (0.1.5) counts matmuls, convolutions and norms, but returns nothing for
recurrent layers, attention kernels and elementwise ops, and silently ignores a
few ops that do real arithmetic (``relu``, ``clamp``). The handles below fill
those gaps (`bench.op_handles`); ops that are still not understood are *reported* in
``Complexity.uncounted`` rather than quietly counted as zero.
"""

from __future__ import annotations

import contextlib
import json
import warnings
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.nn as nn

with warnings.catch_warnings():
    # fvcore.nn imports its focal losses, which call the deprecated torch.jit.script.
    warnings.simplefilter("ignore", DeprecationWarning)
    from fvcore.nn import FlopCountAnalysis

from bench.config import to_dict
from bench.op_handles import FREE_OPS, HANDLES
from bench.shared_state import SharedState

# The counter traces models on the CPU, as every measurement runs there (the tasks' example
# inputs are CPU tensors); code that counts a model trained on another device moves it here.
COUNTER_DEVICE = torch.device("cpu")

__all__ = ["Complexity", "NonzeroCounter", "measure", "profile_table"]

Inputs = torch.Tensor | tuple


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


# Operators whose cost scales with a module's weight matrix (used for nonzero_macs).
# bmm/matmul/einsum are excluded: inside attention they multiply activations.
_WEIGHTED_OPS = {"linear", "addmm", "conv", "gru", "lstm", "rnn_tanh", "rnn_relu"}


# --------------------------------------------------------------------------- analysis


def _as_tuple(example_input: Inputs) -> tuple:
    return example_input if isinstance(example_input, tuple) else (example_input,)


def _build_analysis(model: nn.Module, example_input: Inputs) -> FlopCountAnalysis:
    """FlopCountAnalysis with our handles, free ops ignored and warnings off."""
    fa = FlopCountAnalysis(model, _as_tuple(example_input))
    fa.set_op_handle(**HANDLES)
    fa.set_op_handle(**{f"aten::{op}": None for op in FREE_OPS})  # None = ignore
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


def measure(model: nn.Module, example_input: torch.Tensor | tuple[torch.Tensor, ...]) -> Complexity:
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
        return "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths)))

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


def flops_at(task, widths: dict[str, int], shared: SharedState | None = None) -> int:
    """The counter's FLOPs of `task.build_model(widths)` on its example input (unnamed slots
    at full width; `{}` is the dense model), memoised in `shared` if given: the runner's
    target check and the methods' width searches ask for the same widths many times, and
    each count is an fvcore trace."""
    widths = task.resolve_widths(widths)

    def count() -> int:
        with torch.random.fork_rng(devices=[]):  # memoised: leave the run's generator as if never called
            return measure(task.build_model(widths), task.example_input()).flops

    if shared is None:
        return count()
    key = (json.dumps([task.name, to_dict(task.config)], sort_keys=True), tuple(sorted(widths.items())))
    return shared.memo("flops_at", key, count)
