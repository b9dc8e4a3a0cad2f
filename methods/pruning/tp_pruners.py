"""torch-pruning for speech layers: custom pruners for what it cannot handle by itself.

torch-pruning traces a model through autograd and treats every unknown op as element-wise.
Two layers of the speech models break that:

- **Recurrent layers** (nn.GRU): on CPU the fused GRU's autograd graph is an unrolled loop
  with gate splits, and torch-pruning 1.6 fails inside it (IndexError in its split index
  mapping); its LSTM pruner slices `weight_hh` and the biases by unit, not by gate block.
  `RNNPruner` prunes hidden units in every gate block of `weight_ih`/`weight_hh`/biases
  (and the columns of `weight_hh`), and input features as columns of `weight_ih`.
- **Front ends** (`tasks.base.FeatureBank`, e.g. the log-mel filterbank) hold their
  features as rows of a buffer and run on the raw input, which needs no gradient, so the
  trace starts at the layer after them (e.g. a BatchNorm) and torch-pruning shrinks that
  layer but not the bank. `FeatureBankPruner` drops features through the bank's own
  `keep_features`; a bank has no input channels. Any layer that implements the protocol
  is pruned so, without this module knowing the task that defines it.

Both are registered as customized layers, and while the graph is traced their outputs
are cut from what is inside them (`_Opaque`): the layer becomes one node whose input is
the layer's input (the GRU) or nothing (the front end). Attention needs no custom pruner:
torch-pruning takes `scaled_dot_product_attention` as element-wise (and the 3-D head
views as identity maps), which couples the q, k, v projections' outputs with the output
projection's inputs, index by index: right here, as q and k must lose the same features,
v and the output projection too, and the task has one head_dim for all four. The caller
keeps the head count by removing the same feature of every head (`methods.pruning.slot_groups`).

Importance: torch-pruning's group importances score Conv, Linear and norm layers; the
classes here add the recurrent weights of a group (magnitude ``|w|^2``, Taylor
``|w * dL/dw|``; another importance mixes in `WithRecurrentWeights` with its own
per-entry score) and leave normalisation to the caller.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager

import torch
import torch_pruning as tp
from torch import nn

from bench.device import model_device
from tasks.base import FeatureBank


class RNNPruner(tp.pruner.function.BasePruningFunc):
    """Hidden units (out) and input features (in) of a one-layer, one-direction nn.GRU/LSTM/RNN."""

    TARGET_MODULES = nn.RNNBase

    @staticmethod
    def gates(layer: nn.RNNBase) -> int:
        return {"GRU": 3, "LSTM": 4}.get(layer.mode, 1)

    @staticmethod
    def supports(layer: nn.RNNBase) -> bool:
        return layer.num_layers == 1 and not layer.bidirectional and not getattr(layer, "proj_size", 0)

    def _rows(self, layer: nn.RNNBase, keep: list[int]) -> list[int]:
        """`keep` in every gate block: weight rows are `gates` contiguous blocks of hidden units.

        Plain ints, not a tensor: torch-pruning makes its index tensor on the weight's device
        (from a tensor it accepts only a CPU one)."""
        h = layer.hidden_size
        return [g * h + i for g in range(self.gates(layer)) for i in keep]

    def prune_out_channels(self, layer: nn.RNNBase, idxs: Sequence[int]) -> nn.Module:
        keep = sorted(set(range(layer.hidden_size)) - set(idxs))
        rows = self._rows(layer, keep)
        for name in ("weight_ih_l0", "weight_hh_l0", "bias_ih_l0", "bias_hh_l0"):
            p = getattr(layer, name, None)
            if p is None:
                continue
            p = self._prune_parameter_and_grad(p, rows, 0)
            if name == "weight_hh_l0":
                p = self._prune_parameter_and_grad(p, keep, 1)
            setattr(layer, name, p)  # RNNBase.__setattr__ keeps _flat_weights in step
        layer.hidden_size = len(keep)
        return layer

    def prune_in_channels(self, layer: nn.RNNBase, idxs: Sequence[int]) -> nn.Module:
        keep = sorted(set(range(layer.input_size)) - set(idxs))
        layer.weight_ih_l0 = self._prune_parameter_and_grad(layer.weight_ih_l0, keep, 1)
        layer.input_size = len(keep)
        return layer

    def get_out_channels(self, layer: nn.RNNBase) -> int:
        return layer.hidden_size

    def get_in_channels(self, layer: nn.RNNBase) -> int:
        return layer.input_size

    def scores(
        self, layer: nn.RNNBase, idxs: Sequence[int], out: bool, entry: Callable[[torch.Tensor], torch.Tensor]
    ) -> torch.Tensor:
        """Per pruned index: `entry` (a score per weight entry, e.g. ``|w|^2``) summed over every entry it owns."""
        if not out:
            return entry(layer.weight_ih_l0).sum(0)[list(idxs)]
        g, h = self.gates(layer), layer.hidden_size
        per_unit = entry(layer.weight_hh_l0).sum(0)  # columns: what each unit feeds back
        for name in ("weight_ih_l0", "weight_hh_l0"):
            per_unit = per_unit + entry(getattr(layer, name)).sum(1).reshape(g, h).sum(0)
        return per_unit[list(idxs)]


class FeatureBankPruner(tp.pruner.function.BasePruningFunc):
    """Output features of a `FeatureBank` (rows of its own tensors). No input channels."""

    TARGET_MODULES = FeatureBank

    def prune_out_channels(self, layer: FeatureBank, idxs: Sequence[int]) -> nn.Module:
        layer.keep_features(sorted(set(range(layer.out_features)) - set(idxs)))
        return layer

    def prune_in_channels(self, layer: FeatureBank, idxs: Sequence[int]) -> nn.Module:
        return layer

    def get_out_channels(self, layer: FeatureBank) -> int:
        return layer.out_features

    def get_in_channels(self, layer: FeatureBank) -> None:
        return None


def customized_pruners(model: nn.Module) -> dict[type, tp.pruner.function.BasePruningFunc]:
    """Layer class → custom pruner for the classes in `model` (torch-pruning matches classes exactly)."""
    found: dict[type, tp.pruner.function.BasePruningFunc] = {}
    for m in model.modules():
        if isinstance(m, nn.RNNBase):
            if not RNNPruner.supports(m):
                raise ValueError(
                    f"structured pruning handles one-layer, one-direction RNNs without projection, not {m}"
                )
            found.setdefault(type(m), RNNPruner())
        elif isinstance(m, FeatureBank):
            found.setdefault(type(m), FeatureBankPruner())
    return found


class _Opaque(torch.autograd.Function):
    """Identity on `out` whose only autograd parent is `anchor`: hides a layer's inside from the trace."""

    @staticmethod
    def forward(ctx, anchor: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        return out.clone()

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        return None, None


@contextmanager
def _opaque_outputs(model: nn.Module, types: tuple[type, ...]) -> Iterator[None]:
    def hook(module, inputs, output):
        x = inputs[0]
        # a leaf on the input's device: the trace stops there
        anchor = x if x.requires_grad else torch.zeros((), device=x.device, requires_grad=True)
        if isinstance(output, tuple):  # nn.GRU: (sequence, last state); torch-pruning reads the first
            return (_Opaque.apply(anchor, output[0].detach()), *output[1:])
        return _Opaque.apply(anchor, output.detach())

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, types)]
    try:
        yield
    finally:
        for h in handles:
            h.remove()


def dependency_graph(model: nn.Module, example: torch.Tensor) -> tp.DependencyGraph:
    """torch-pruning's dependency graph of `model`, with the custom pruners registered."""
    custom = customized_pruners(model)
    with _opaque_outputs(model, tuple(custom)), torch.enable_grad():
        return tp.DependencyGraph().build_dependency(
            model, example_inputs=example, customized_pruners=custom, verbose=False
        )


class WithRecurrentWeights:
    """Mixin: add the recurrent layers' own weights to a torch-pruning group importance, each
    entry scored by `entry` (the importance's own per-entry score)."""

    def entry(self, w: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def __call__(self, group) -> torch.Tensor:
        total = super().__call__(group)
        if total is None:
            total = torch.zeros(len(group[0].idxs), device=model_device(group[0].dep.target.module))
        for item in group:
            pruner = getattr(item.dep.handler, "__self__", None)
            if isinstance(pruner, RNNPruner) and None not in item.root_idxs:
                out = item.dep.handler == pruner.prune_out_channels
                local = pruner.scores(item.dep.layer, item.idxs, out, self.entry).to(total.device, total.dtype)
                total = total.scatter_add(0, torch.tensor(item.root_idxs, device=total.device), local)
        return total


class MagnitudeImportance(WithRecurrentWeights, tp.importance.GroupMagnitudeImportance):
    """Group L2 magnitude: ``|w|^2`` summed over the group's entries of each index."""

    def __init__(self):
        super().__init__(p=2, group_reduction="sum", normalizer=None)

    def entry(self, w: torch.Tensor) -> torch.Tensor:
        return w.detach() ** 2


class TaylorImportance(WithRecurrentWeights, tp.importance.GroupTaylorImportance):
    """First-order Taylor: ``|w * dL/dw|`` summed over the group (gradients must be in `.grad`)."""

    def __init__(self):
        super().__init__(group_reduction="sum", normalizer=None)

    def entry(self, w: torch.Tensor) -> torch.Tensor:
        return (w.detach() * w.grad).abs()


IMPORTANCES = {"magnitude": MagnitudeImportance, "taylor": TaylorImportance}
