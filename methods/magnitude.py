"""Global unstructured magnitude pruning (`torch.nn.utils.prune`), iterative, with fine-tuning.

The knob is the target *non-zero* FLOP ratio (non-zero FLOP/s over the dense model's
FLOP/s, from the counter's `nonzero_flops`, which scales each weighted layer by its share
of non-zero weights); the sparsity that meets it is found, not given, and recorded. Dense
FLOP/s do not change: the candidate has the dense architecture with zeros in its weights
(what hardware that skips zeros would save; dense hardware runs it as fast as before).

Per run, within the budget every method gets (`train.steps` optimizer steps in all; see
`methods.pruning.stepping.split_budget`): train the dense model for `pretrain` of the
budget (search cost), then `steps` times: find by bisection how many of the
smallest-magnitude weights (ranked over all pruned layers together) must be zero for the
step's ratio (geometric schedule to the target), prune them with
`prune.global_unstructured`, fine-tune briefly (`step_finetune` of the budget, search
cost); at the end fine-tune with the rest of the budget (train time) and make the masks
permanent (`prune.remove`).
Pruned: the weights of every Linear, convolution and recurrent layer; with
`include_head=false` the last of them (the head) stays dense, but then its FLOPs are a
floor under the ratio (on the synthetic task 24%, so 0.125 and 0.0625 are out of reach).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field, replace

import torch
from torch import nn
from torch.nn.utils import prune

from bench.complexity import NonzeroCounter, measure
from bench.registry import register_method
from bench.targets import DEFAULT_TARGETS
from methods.base import Candidate, Method, RunContext
from methods.pruning.pretrain import pretrained_dense
from methods.pruning.stepping import check_split, closest_count, split_budget, step_targets, validate_schedule

_WEIGHTED = (nn.Linear, nn.modules.conv._ConvNd, nn.RNNBase)


@dataclass(frozen=True)
class MagnitudeConfig:
    # target non-zero FLOP ratio of the dense model; one run per value (defaults under the task's floor are left out)
    ratios: list[float] = field(default_factory=lambda: list(DEFAULT_TARGETS))
    steps: int = 3  # prune + fine-tune iterations on the way to the target
    pretrain: float = 0.5  # dense pre-training, as a fraction of the run's budget (train.steps)
    step_finetune: float = 0.1  # fine-tuning after each intermediate step, as a fraction of the budget
    include_head: bool = True  # prune the last layer's weights too (zeros only; its outputs stay)
    max_sparsity: float = 0.995  # never zero more than this share of the pruned weights

    def validate(self) -> None:
        validate_schedule(self)
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


@register_method("magnitude")
class Magnitude(Method):
    description = (
        "global unstructured magnitude pruning to a non-zero FLOP ratio, iterative with fine-tuning (dense "
        "FLOPs unchanged)"
    )
    Config = MagnitudeConfig
    knob = "ratios"
    target_field = "ratios"

    def check_budget(self, recipe) -> None:
        check_split(self.config, self.name, recipe.steps)

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

    def candidates(self, ctx: RunContext) -> Iterator[Candidate]:
        task, cfg = ctx.task, self.config
        example = task.example_input()
        budget = split_budget(cfg, ctx.recipe.steps)
        short, final = replace(ctx.recipe, steps=budget.step), replace(ctx.recipe, steps=budget.final)
        target = self.knob_value(ctx)
        model, search_seconds = pretrained_dense(ctx, budget.pretrain)
        # torch.nn.utils.prune flattens weights with .view(-1): channels-last ones must be made contiguous
        model = model.to(memory_format=torch.contiguous_format)
        dense = measure(model, example).flops
        params = prunable_weights(model, cfg.include_head)
        total = sum(getattr(m, n).numel() for m, n in params)
        trace = []
        for i, step_target in enumerate(step_targets(target, cfg.steps)):
            weights = [effective(m, n) for m, n in params]
            zeros = sum(int((w == 0).sum()) for w in weights)
            probe = plain_copy(task, model)
            probe_params = prunable_weights(probe, cfg.include_head)
            counter = NonzeroCounter(probe, example)  # traced once; the probe's weights change in place
            flat = torch.cat([w.flatten() for w in weights])
            order = torch.argsort(flat.abs(), stable=True)

            def ratio_of(k: int) -> float:
                values = flat.clone()
                values[order[:k]] = 0
                with torch.no_grad():
                    nn.utils.vector_to_parameters(values, [getattr(m, n) for m, n in probe_params])
                return counter.nonzero_flops() / dense

            k = closest_count(ratio_of, step_target, zeros, int(cfg.max_sparsity * total))
            if k > zeros:
                prune.global_unstructured(
                    params,
                    pruning_method=prune.L1Unstructured,
                    amount=k - zeros,
                    importance_scores={(m, n): w.abs() for (m, n), w in zip(params, weights)},
                )
            trace.append(
                {
                    "step_target": round(step_target, 5),
                    "sparsity": round(k / total, 5),
                    "nonzero_ratio": round(ratio_of(k), 5),
                }
            )
            if i < cfg.steps - 1 and budget.step > 0:
                search_seconds += ctx.train(model, recipe=short, desc=f"{task.name}/magnitude step {i + 1}").seconds
        report = ctx.train(model, recipe=final, desc=f"{task.name}/magnitude ratio={target} fine-tune")
        for m, n in params:
            if prune.is_pruned(m) and hasattr(m, n + "_mask"):
                prune.remove(m, n)
        sparsity = sum(int((getattr(m, n) == 0).sum()) for m, n in params) / total
        cx = measure(model, example)
        yield Candidate(
            model=model.eval(),
            widths=task.resolve_widths(None),
            label=f"ratio={target}",
            train_seconds=report.seconds,
            search_seconds=search_seconds,
            train_steps=budget.total,
            target_ratio=target,
            target_flops="nonzero_flops",
            info={
                "sparsity": sparsity,
                "nonzero_ratio": cx.nonzero_flops / dense,
                "dense_ratio": cx.flops / dense,
                "budget_split": vars(budget),
                "include_head": cfg.include_head,
                "steps": trace,
                "final_train_loss": report.final_loss,
                "loss_curve": report.loss_curve,
            },
        )
