"""Where each width slot lives in a task's weights, and consolidation by slicing them.

The layout is found by probing, not declared: build the task's model at full width and
with one slot one feature narrower, and compare every state-dict entry's shape. A dimension
that shrinks by `g` is `g` contiguous groups of the slot's features (1 for Linear/Conv/norm
layers, 3 gate groups for nn.GRU, 4 for nn.LSTM, `heads` for a multi-head projection). So
a task declares its slots once, in `build_model(widths)`, and both consolidation and weight
masking follow from it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn.utils import parametrize

from bench.config import ConfigError


@dataclass(frozen=True)
class SlotDim:
    dim: int  # tensor dimension
    slot: str
    groups: int  # contiguous groups of the slot's features along `dim`


def slot_layout(task, slots: list[str] | None = None) -> dict[str, list[SlotDim]]:
    """State-dict name → the dimensions that depend on a slot (only names that have any)."""
    full = task.width_slots()
    reference = {k: tuple(v.shape) for k, v in task.build_model().state_dict().items()}
    layout: dict[str, list[SlotDim]] = {}
    for slot in slots or list(full):
        n = full[slot]
        if n < 2:
            continue  # a slot of width 1 cannot shrink
        probe = {k: tuple(v.shape) for k, v in task.build_model({slot: n - 1}).state_dict().items()}
        for name, shape in reference.items():
            for dim, (big, small) in enumerate(zip(shape, probe[name])):
                if big == small:
                    continue
                groups = big - small
                if big != groups * n:
                    raise ConfigError(
                        f"task {task.name}: {name} dim {dim} has size {big}, not a multiple of slot {slot}'s width "
                        f"{n}; cannot consolidate"
                    )
                if any(d.dim == dim for d in layout.get(name, [])):
                    raise ConfigError(f"task {task.name}: {name} dim {dim} depends on two slots; cannot consolidate")
                layout.setdefault(name, []).append(SlotDim(dim, slot, groups))
    return layout


def select_features(tensor: torch.Tensor, dims: list[SlotDim], keep: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """Keep the features `keep[slot]` (sorted indices) of each slot dimension of `tensor`."""
    for d in dims:
        if d.slot not in keep:
            continue
        shape = list(tensor.shape)
        n = shape[d.dim] // d.groups
        grouped = tensor.reshape(*shape[: d.dim], d.groups, n, *shape[d.dim + 1 :])
        grouped = grouped.index_select(d.dim + 1, keep[d.slot].to(tensor.device))
        shape[d.dim] = d.groups * len(keep[d.slot])
        tensor = grouped.reshape(shape)
    return tensor


def consolidate(task, model: nn.Module, keep: Mapping[str, torch.Tensor]) -> tuple[nn.Module, dict[str, int]]:
    """A plain model of `task` at the kept features' widths, with the kept weights.

    `model` is the full-width model (no parametrizations); `keep` maps a slot to the sorted
    indices of the features to keep. Returns the new model (eval mode) and its widths.
    """
    layout = slot_layout(task, list(keep))
    widths = {**task.resolve_widths(None), **{s: int(len(i)) for s, i in keep.items()}}
    small = task.build_model(widths)
    state = {name: select_features(t.detach(), layout.get(name, []), keep) for name, t in model.state_dict().items()}
    small.load_state_dict(state)
    return small.eval(), widths


class _FeatureMask(nn.Module):
    """Parametrization: zero the weights of the features `active(slot)` marks absent."""

    def __init__(self, dims: list[SlotDim], active):
        super().__init__()
        self.dims, self.active = dims, active

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        for d in self.dims:
            present = self.active(d.slot)  # bool tensor over the slot's features, or None for all
            if present is None:
                continue
            shape = [1] * weight.dim()
            shape[d.dim] = weight.shape[d.dim]
            weight = weight * present.to(weight.dtype).repeat(d.groups).reshape(shape)
        return weight


def mask_weights(model: nn.Module, layout: dict[str, list[SlotDim]], active) -> None:
    """Make the features `active(slot)` marks absent disappear inside recurrent layers.

    Elsewhere a `WidthMask` zeroing a feature where its consumers read it already makes it
    absent. A recurrence also reads its own hidden state, so for nn.GRU/LSTM/RNN the removed
    units' rows and columns are zeroed in every weight and bias: such a unit stays at zero
    and affects nothing, and the masked model computes exactly what the consolidated one
    does. Only these layers pay for the parametrization.
    """
    for module_name, module in model.named_modules():
        if not isinstance(module, nn.RNNBase):
            continue
        for attr, _ in list(module.named_parameters(recurse=False)):
            dims = layout.get(f"{module_name}.{attr}" if module_name else attr)
            if dims:
                parametrize.register_parametrization(module, attr, _FeatureMask(dims, active), unsafe=True)


def unmask_weights(model: nn.Module) -> None:
    """Remove the parametrizations of `mask_weights`, keeping the original weights."""
    for module in list(model.modules()):
        if parametrize.is_parametrized(module):
            for attr in list(module.parametrizations):
                parametrize.remove_parametrizations(module, attr, leave_parametrized=False)
