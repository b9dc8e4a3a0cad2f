"""The task's width slots as torch-pruning groups, and the pruned model back as the task's model.

torch-pruning's groups are the sets of channels that must go together; a width slot may
hold several of them (each residual block's inner channels in a ResNet stage, the FFN of
each transformer layer), and `task.build_model(widths)` has one width per slot. So each
group is mapped to the slot of its root layer's outputs (`slot_layout`), and the caller
removes the same number of features from every group of a slot. A group of the attention
projections holds `heads` contiguous blocks of the slot's features (``heads * head_dim``
channels): a feature is removed from every head, so the head count stays.

After pruning, the widths are read back from the tensor shapes, and the state dict is
loaded into `task.build_model(widths)`: the candidate is the task's own module (what
`bench.checkpoint.load_candidate` rebuilds), and any inconsistency fails loudly here.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import torch_pruning as tp
from torch import nn

from methods.dynamic.layout import SlotDim


@dataclass
class SlotGroup:
    slot: str
    group: tp.Group  # torch-pruning's group with all of the root's channels (for importance)
    root: nn.Module  # the layer whose output channels root the group
    handler: Callable  # the root's out-channel pruning function
    heads: int  # contiguous blocks of the slot's features among the root's channels

    @property
    def width(self) -> int:
        return len(self.group[0].idxs) // self.heads


def out_slot(name: str, layout: Mapping[str, Sequence[SlotDim]]) -> str | None:
    """The slot of module `name`'s outputs: dimension 0 of its own weights/buffers, if any."""
    prefix = f"{name}." if name else ""
    for key, dims in layout.items():
        if key.startswith(prefix) and "." not in key[len(prefix) :]:
            for d in dims:
                if d.dim == 0:
                    return d.slot
    return None


def slot_groups(
    graph: tp.DependencyGraph,
    model: nn.Module,
    layout: Mapping[str, Sequence[SlotDim]],
    widths: Mapping[str, int],
    slots: Sequence[str],
) -> list[SlotGroup]:
    """torch-pruning's groups of `model` that hold features of `slots`, with their slot.

    Layers whose outputs are no slot (the classifier's logits) are ignored layers, so no
    group removes their outputs.
    """
    names = {m: n for n, m in model.named_modules()}
    roots = (nn.modules.conv._ConvNd, nn.Linear, *graph.CUSTOMIZED_PRUNERS)
    ignored = [m for m in model.modules() if isinstance(m, roots) and out_slot(names[m], layout) is None]
    found = []
    for group in graph.get_all_groups(ignored_layers=ignored, root_module_types=roots):
        root, handler = group[0].dep.target.module, group[0].dep.handler
        slot = out_slot(names[root], layout)
        if slot not in slots:
            continue
        channels = len(group[0].idxs)
        if channels % widths[slot]:
            raise RuntimeError(
                f"group of {names[root]} has {channels} channels, not a multiple of slot {slot}'s width {widths[slot]}"
            )
        found.append(SlotGroup(slot, group, root, handler, channels // widths[slot]))
    return found


def prune_features(graph: tp.DependencyGraph, group: SlotGroup, features: Sequence[int]) -> None:
    """Remove `features` (indices in 0..width-1) from every head of `group`, with all that depends on them."""
    if features:
        idxs = [h * group.width + f for h in range(group.heads) for f in features]
        graph.get_pruning_group(group.root, group.handler, idxs).prune()


def widths_from_shapes(
    state: Mapping, layout: Mapping[str, Sequence[SlotDim]], full: Mapping[str, int]
) -> dict[str, int]:
    """Each slot's width, read from the tensors that hold it; an error if they disagree."""
    seen: dict[str, set] = {}
    for name, dims in layout.items():
        for d in dims:
            size = state[name].shape[d.dim]
            if size % d.groups:
                raise RuntimeError(
                    f"pruning left {name} dim {d.dim} at {size}, not {d.groups} equal blocks of slot {d.slot}"
                )
            seen.setdefault(d.slot, set()).add(size // d.groups)
    bad = {s: sorted(v) for s, v in seen.items() if len(v) > 1}
    if bad:
        raise RuntimeError(f"pruning left slots with several widths: {bad}")
    return {s: next(iter(seen[s])) if s in seen else n for s, n in full.items()}


def as_task_model(task, pruned: nn.Module, layout: Mapping[str, Sequence[SlotDim]]) -> tuple[nn.Module, dict[str, int]]:
    """`task.build_model(widths)` with the pruned weights, and those widths (model in eval mode)."""
    state = pruned.state_dict()
    widths = widths_from_shapes(state, layout, task.width_slots())
    model = task.build_model(widths)
    try:
        model.load_state_dict(state)
    except RuntimeError as e:
        raise RuntimeError(f"the pruned model is not task {task.name}'s model at widths {widths}: {e}") from None
    return model.eval(), widths
