"""How much of the boundary feature is signal, mask by mask along a slot, per noise mode.

Noise injection mixes a slot's boundary feature k+1 as sqrt(lam) x + sqrt(1 - lam) sigma nu.
A slot with several masks (the transformer's model width: 11) mixes it at each. Two
training-mode passes that differ only in the noise draw give, at each mask, two values of
the boundary feature; their correlation over batch and frames is the share of its
variance that is signal (1: no noise; lam after a single mix). Printed per `slot_noise`
mode, for the untrained model at lam = 0.5 (the other slots at full width).

    python benchmarks/boundary_noise.py [--model transformer] [--lam 0.5]
"""

from __future__ import annotations

import argparse

import torch

from bench.config import apply_overrides
from bench.registry import get_task_class
from methods.dynamic.flops_model import FlopsModel
from methods.noise_injection import SLOT_NOISE, NoiseInjectionConfig, NoiseInjectionController
from tasks.base import width_masks


def signal_shares(task, mode: str, slot: str, lam: float, seed: int = 0) -> list[float]:
    """Correlation of the boundary feature between two noise draws, at each mask of `slot`."""
    full = task.width_slots()
    flops = FlopsModel.for_task(task, list(full))
    config = NoiseInjectionConfig(slot_noise=mode)
    controller = NoiseInjectionController(task, list(full), flops, config, kappa_min=0.01)
    torch.manual_seed(seed)
    model = task.build_model()
    controller.bind(model)
    k = full[slot] // 2
    with torch.no_grad():
        controller.kappa[slot].fill_((k + lam) / full[slot])
    seen: list[list[torch.Tensor]] = []
    masks = width_masks(model)[slot]
    hooks = [
        m.register_forward_hook(lambda m, i, out, j=j: seen[-1].__setitem__(j, out.narrow(m.dim, k, 1).flatten()))
        for j, m in enumerate(masks)
    ]
    wave = torch.randn(8, 16000, generator=torch.Generator().manual_seed(1)) * 0.1
    model.train()
    for draw in range(2):
        seen.append([None] * len(masks))
        torch.manual_seed(100 + draw)
        with torch.no_grad():
            model(wave)
    for h in hooks:
        h.remove()
    return [float(torch.corrcoef(torch.stack([a, b]))[0, 1]) for a, b in zip(*seen)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="transformer")
    parser.add_argument("--lam", type=float, default=0.5)
    args = parser.parse_args()
    cls = get_task_class("vad")
    task = cls(apply_overrides(cls.Config(), {"model": args.model}, "task vad"), scale="smoke")
    for mode in SLOT_NOISE:
        shares = signal_shares(task, mode, "n_mels", args.lam)
        shown = " ".join(f"{s:.2f}" for s in shares)
        print(f"{mode:>6}: signal share of the boundary feature at each n_mels mask: {shown}")


if __name__ == "__main__":
    main()
