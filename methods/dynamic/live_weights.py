"""Training on a slot's live features only, by slicing the weights that hold its features.

In noise injection's training pass a slot's features after the boundary one are zeroed
by its masks, so computing them is wasted work. When every weight of a slot lives in a
layer that reads its width from its weights (Linear, Conv1d/2d without groups, BatchNorm),
narrowing those weights to the live features makes the layers compute only them: the
slot's activations shrink to the live width, and a mask mixes the boundary feature
without zeroing anything. It pays at small widths (anti-spoofing ResNet steps at a quarter
of each stage's width, measured in one session: 0.92-0.96x the dense step narrowed,
1.19-1.30x with every feature computed); near full width it costs more than it saves
(`NARROW_SHARE`; docs/method.md has the measurements).

This changes nothing the model computes, up to rounding: a zeroed feature's consumers
read zeros, and the weights that read or write it get zero gradients either way (their
Adam state and weight decay are those of the masked model). One thing differs: a
BatchNorm's running statistics of a dead feature are not updated while it is dead. They
only matter if the feature comes back, and then they catch up within a few dozen steps
(momentum 0.1); consolidation keeps only features that were live at the end.

A model may also depend on a width outside its weights (a reshape into heads, a view
with a fixed size). So a slot is sliced only when a probe agrees: a fresh model with half
the slot's features sliced away must give what it gives with them zeroed.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn
from torch.nn.utils import parametrize

from methods.dynamic.boundary_mix import keep_vector
from methods.dynamic.layout import SlotDim
from tasks.base import width_masks

# Layers that take their feature counts from their tensors' shapes, so narrowing the tensors narrows them.
SLICEABLE = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.BatchNorm1d, nn.BatchNorm2d)

LiveCount = Callable[[str], "int | None"]  # slot -> number of leading features computed (None: all)
# A slot is narrowed only while at most this share of its features is live. Nearer full
# width, narrowing saved less than it cost on the ResNet (odd channel counts in the
# channels-last layout lose the vectorisation of batch norms and elementwise passes):
# ResNet steps with 68 % of the features live were faster narrowed, with 80 % and 90 % as
# fast or faster masked (docs/method.md).
NARROW_SHARE = 0.75


class _LiveSlice(nn.Module):
    """Parametrization: narrow each slot dimension of a tensor to the slot's live features."""

    def __init__(self, dims: list[SlotDim], live: LiveCount):
        super().__init__()
        self.dims, self.live = dims, live

    def forward(self, tensor: torch.Tensor) -> torch.Tensor:
        sliced = tensor
        for d in self.dims:
            count = self.live(d.slot)
            if count is not None and count <= NARROW_SHARE * sliced.shape[d.dim]:
                sliced = sliced.narrow(d.dim, 0, count)
        if sliced is tensor or sliced.dim() != 4 or not tensor.is_contiguous(memory_format=torch.channels_last):
            return sliced
        # A channels-last convolution whose weight is not channels-last falls back to a slow path.
        return sliced.contiguous(memory_format=torch.channels_last)


def _owners(model: nn.Module, layout: dict[str, list[SlotDim]]) -> dict[str, tuple[nn.Module, str]]:
    """State-dict name in `layout` → (the module holding it, its attribute name)."""
    modules = dict(model.named_modules())
    owners = {}
    for name in layout:
        module_name, _, attr = name.rpartition(".")
        owners[name] = (modules[module_name], attr)
    return owners


def _sliceable_layer(module: nn.Module) -> bool:
    return isinstance(module, SLICEABLE) and getattr(module, "groups", 1) == 1


def typed_slots(model: nn.Module, layout: dict[str, list[SlotDim]], slots: list[str]) -> list[str]:
    """The slots of `slots` whose every tensor is in a sliceable layer, one feature per index."""
    owners = _owners(model, layout)
    bad = {
        d.slot for name, dims in layout.items() for d in dims if d.groups != 1 or not _sliceable_layer(owners[name][0])
    }
    return [s for s in slots if s not in bad and any(d.slot == s for dims in layout.values() for d in dims)]


def slice_weights(model: nn.Module, layout: dict[str, list[SlotDim]], slots: list[str], live: LiveCount) -> None:
    """Narrow every tensor's dimensions of `slots` to `live(slot)` leading features.
    `unmask_weights` (methods.dynamic.layout) removes it with the other parametrizations."""
    owners = _owners(model, layout)
    for name, dims in layout.items():
        mine = [d for d in dims if d.slot in slots]
        if mine:
            module, attr = owners[name]
            parametrize.register_parametrization(module, attr, _LiveSlice(mine, live), unsafe=True)


def _outputs(value) -> list[torch.Tensor]:
    if isinstance(value, torch.Tensor):
        return [value]
    if isinstance(value, (tuple, list)):
        return [t for v in value for t in _outputs(v)]
    if isinstance(value, dict):
        return [t for v in value.values() for t in _outputs(v)]
    return []


def _agrees(task, layout: dict[str, list[SlotDim]], slot: str) -> bool:
    """Whether a fresh model of `task`, perturbed so that no branch is silent (a residual
    branch may start at zero), gives the same output with half of `slot` sliced away as
    with it zeroed."""
    count = max(1, task.width_slots()[slot] // 2)
    model = task.build_model().eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1 * torch.randn_like(p))
    example = task.example_input()
    example = example if isinstance(example, tuple) else (example,)

    masks = width_masks(model)[slot]
    for mask in masks:
        mask.transform = lambda x, mask: x * keep_vector(x, count, mask.dim)
    with torch.no_grad():
        reference = _outputs(model(*example))
        for mask in masks:
            mask.transform = None
        slice_weights(model, layout, [slot], lambda s: count)
        try:
            sliced = _outputs(model(*example))
        except (RuntimeError, ValueError, IndexError):  # a width the layers' tensors do not carry
            return False
    return len(sliced) == len(reference) and all(
        a.shape == b.shape and torch.allclose(a, b, rtol=1e-4, atol=1e-5) for a, b in zip(reference, sliced)
    )


def sliceable_slots(task, layout: dict[str, list[SlotDim]], slots: list[str]) -> list[str]:
    """The slots of `slots` that `slice_weights` can narrow without changing what the model computes."""
    with torch.random.fork_rng(devices=[]):  # probing leaves the run's random stream as it was
        torch.manual_seed(0)
        typed = typed_slots(task.build_model(), layout, slots)
        return [s for s in typed if _agrees(task, layout, s)]
