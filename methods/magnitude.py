"""Global unstructured magnitude pruning (`torch.nn.utils.prune`), iterative, with fine-tuning.

The knob is the target *non-zero* FLOP ratio (non-zero FLOP/s over the dense model's
FLOP/s, from the counter's `nonzero_flops`, which scales each weighted layer by its share
of non-zero weights); the sparsity that meets it is found, not given, and recorded. Dense
FLOP/s do not change: the candidate has the dense architecture with zeros in its weights
(what hardware that skips zeros would save; dense hardware runs it as fast as before).

The schedule (dense pre-training, `steps` prune steps with short fine-tunes, the final
fine-tuning) is `methods.pruning.iterative`'s. Each step finds by bisection how many of
the smallest-magnitude weights (ranked over all pruned layers together) must be zero for
the step's ratio and prunes them with `prune.global_unstructured`; at the end the masks
are made permanent (`prune.remove`).
Pruned: the weights of every Linear, convolution and recurrent layer; with
`include_head=false` the last of them (the head) stays dense, but then its FLOPs are a
floor under the ratio (on the synthetic task 24%, so 0.125 and 0.0625 are out of reach).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.nn.utils import prune

from bench.complexity import NonzeroCounter, measure
from bench.registry import register_method
from methods.base import RunContext
from methods.pruning.iterative import IterativeConfig, IterativePruning
from methods.pruning.stepping import closest_count

_WEIGHTED = (nn.Linear, nn.modules.conv._ConvNd, nn.RNNBase)


@dataclass(frozen=True)
class MagnitudeConfig(IterativeConfig):
    # `ratios` (from IterativeConfig) are target *non-zero* FLOP ratios of the dense model
    include_head: bool = True  # prune the last layer's weights too (zeros only; its outputs stay)
    max_sparsity: float = 0.995  # never zero more than this share of the pruned weights

    def validate(self) -> None:
        super().validate()
        if not 0 < self.max_sparsity < 1:
            raise ValueError(f"max_sparsity must be in (0, 1), got {self.max_sparsity}")


def prunable_weights(model: nn.Module, include_head: bool = True) -> list[tuple[nn.Module, str]]:
    """(module, name) of every weight matrix of Linear, convolution and recurrent layers, in module order."""
    found = [
        (m, n)
        for m in model.modules()
        if isinstance(m, _WEIGHTED)
        for n, _ in m.named_parameters(recurse=False)
        if n.startswith("weight")
    ]
    if not include_head and found:
        last = found[-1][0]
        found = [(m, n) for m, n in found if m is not last]
    return found


def effective(module: nn.Module, name: str) -> torch.Tensor:
    """The weight as the forward pass uses it (original times mask while a mask is attached)."""
    if hasattr(module, name + "_mask"):
        return getattr(module, name + "_orig").detach() * getattr(module, name + "_mask")
    return getattr(module, name).detach()


def plain_copy(task, model: nn.Module) -> nn.Module:
    """A new dense model of `task` holding `model`'s effective weights, without pruning masks."""
    state = model.state_dict()
    plain = {
        k[: -len("_orig")] if k.endswith("_orig") else k: v * state[k[: -len("_orig")] + "_mask"]
        if k.endswith("_orig")
        else v
        for k, v in state.items()
        if not k.endswith("_mask")
    }
    probe = task.build_model()
    probe.load_state_dict(plain)
    return probe.eval()


@dataclass
class _Run:
    example: torch.Tensor
    dense: int  # the dense model's FLOPs
    params: list[tuple[nn.Module, str]]  # the pruned weights
    total: int  # their entries


@register_method("magnitude")
class Magnitude(IterativePruning):
    description = (
        "global unstructured magnitude pruning to a non-zero FLOP ratio, iterative with fine-tuning (dense "
        "FLOPs unchanged)"
    )
    Config = MagnitudeConfig
    target_flops = "nonzero_flops"

    def floor(self, task) -> float:
        """Non-zero FLOP ratio with `max_sparsity` of every pruned layer's weights zero: what
        has no weights (front end, norms, attention's products) stays. On the VAD models about
        0.3-0.4, so the smaller default ratios are out of reach there."""
        model, example = task.build_model(), task.example_input()
        counter = NonzeroCounter(model, example)
        with torch.no_grad():
            for m, n in prunable_weights(model, self.config.include_head):
                getattr(m, n).zero_()
        zeroed = counter.nonzero_flops() / counter.flops
        return zeroed + (1 - zeroed) * (1 - self.config.max_sparsity)

    def prepare(self, ctx: RunContext, model: nn.Module) -> tuple[nn.Module, _Run]:
        example = ctx.task.example_input()
        # torch.nn.utils.prune flattens weights with .view(-1): channels-last ones must be made contiguous
        model = model.to(memory_format=torch.contiguous_format)
        params = prunable_weights(model, self.config.include_head)
        total = sum(getattr(m, n).numel() for m, n in params)
        return model, _Run(example, measure(model, example).flops, params, total)

    def prune_step(self, ctx: RunContext, model: nn.Module, step_target: float, run: _Run) -> tuple[nn.Module, dict]:
        cfg, params = self.config, run.params
        weights = [effective(m, n) for m, n in params]
        zeros = sum(int((w == 0).sum()) for w in weights)
        probe = plain_copy(ctx.task, model)
        probe_params = prunable_weights(probe, cfg.include_head)
        counter = NonzeroCounter(probe, run.example)  # traced once; the probe's weights change in place
        flat = torch.cat([w.flatten() for w in weights])
        order = torch.argsort(flat.abs(), stable=True)

        def ratio_of(k: int) -> float:
            values = flat.clone()
            values[order[:k]] = 0
            with torch.no_grad():
                nn.utils.vector_to_parameters(values, [getattr(m, n) for m, n in probe_params])
            return counter.nonzero_flops() / run.dense

        k = closest_count(ratio_of, step_target, zeros, int(cfg.max_sparsity * run.total))
        if k > zeros:
            prune.global_unstructured(
                params,
                pruning_method=prune.L1Unstructured,
                amount=k - zeros,
                importance_scores={(m, n): w.abs() for (m, n), w in zip(params, weights)},
            )
        entry = {
            "step_target": round(step_target, 5),
            "sparsity": round(k / run.total, 5),
            "nonzero_ratio": round(ratio_of(k), 5),
        }
        return model, entry

    def finish(self, ctx: RunContext, model: nn.Module, run: _Run) -> tuple[nn.Module, dict[str, int], dict]:
        for m, n in run.params:
            if prune.is_pruned(m) and hasattr(m, n + "_mask"):
                prune.remove(m, n)
        sparsity = sum(int((getattr(m, n) == 0).sum()) for m, n in run.params) / run.total
        cx = measure(model, run.example)
        info = {
            "sparsity": sparsity,
            "nonzero_ratio": cx.nonzero_flops / run.dense,
            "dense_ratio": cx.flops / run.dense,
            "include_head": self.config.include_head,
        }
        return model, ctx.task.resolve_widths(None), info
