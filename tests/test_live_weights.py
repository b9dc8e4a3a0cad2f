"""Noise injection computes only the live features where the layers allow it, and that
changes nothing it learns."""

import pytest
import torch
from conftest import make_task
from torch import nn

from bench.training import train
from methods.dynamic.flops_model import FlopsModel
from methods.dynamic.layout import consolidate, unmask_weights
from methods.noise_injection import NoiseInjectionConfig, NoiseInjectionController
from tasks.base import WidthMask
from tasks.synthetic import SyntheticTask


def _controller(task, **config):
    slots = list(task.width_slots())
    return NoiseInjectionController(task, slots, FlopsModel(task, slots), NoiseInjectionConfig(**config), target=0.25)


@pytest.mark.parametrize(
    "name,overrides,narrowed",
    [
        ("antispoof", {}, ["stage1", "stage2", "stage3", "stage4"]),
        # n_mels: a filterbank's rows; conv2 and gru: read by the GRU, which keeps its own sizes
        ("vad", {"model": "crnn"}, ["conv1", "head"]),
        # n_mels: per-feature norms; head_dim: heads are groups of a projection's outputs
        ("vad", {"model": "transformer"}, ["ffn"]),
        ("synthetic", {}, ["hidden"]),
    ],
)
def test_slots_in_layers_that_read_their_width_from_their_weights_are_narrowed(name, overrides, narrowed):
    task = make_task(name, overrides)
    controller = _controller(task)
    controller.bind(task.build_model())
    assert controller.sliced == narrowed
    off = _controller(task, live_weights=False)
    off.bind(task.build_model())
    assert off.sliced == []


class _Flip(nn.Module):
    def forward(self, x):
        return x.flip(-1)  # which weight reads a feature depends on the width


class _FixedRows(nn.Module):
    def __init__(self, width):
        super().__init__()
        self.width = width

    def forward(self, x):
        return x.reshape(-1, self.width)  # a size fixed when the model was built


class _WidthOutsideWeights(SyntheticTask):
    def __init__(self, layer):
        super().__init__(scale="smoke")
        self.layer = layer

    def build_model(self, widths=None):
        w = self.resolve_widths(widths)["hidden"]
        c = self.config
        return nn.Sequential(
            nn.Linear(c.in_features, w), nn.Tanh(), WidthMask("hidden"), self.layer(w), nn.Linear(w, c.out_features)
        )


@pytest.mark.parametrize("layer", [lambda w: _Flip(), _FixedRows], ids=["flip", "fixed-reshape"])
def test_a_width_the_weights_do_not_carry_keeps_the_slot_masked_and_training_right(layer):
    task = _WidthOutsideWeights(layer)
    controller = _controller(task)
    model = task.build_model()
    controller.bind(model)
    assert controller.sliced == []  # the probe saw the flip
    with torch.no_grad():
        controller.kappa["hidden"].fill_(0.3)
    x, y = task.dataset("train")[:8]
    model.train()
    assert model(x).shape == y.shape


def _trained(live_weights: bool):
    torch.manual_seed(0)
    task = make_task("antispoof", {})
    controller = _controller(task, live_weights=live_weights, kappa_init=0.4)
    model = task.build_model()
    controller.bind(model)
    report = train(task, model, seed=0, hooks=controller, progress=False)
    keep = controller.keep()
    unmask_weights(model)
    small, _ = consolidate(task, model, keep)
    # Batch statistics: the running ones of a feature that was dead for a while differ by
    # design (not updated while narrowed away); every weight must agree.
    small.train()
    with torch.no_grad():
        out = small(0.1 * torch.randn(3, 16000, generator=torch.Generator().manual_seed(1)))
    return report, controller, out


def test_narrowed_weights_train_the_model_that_zeroed_features_train(one_thread):
    narrowed, n_controller, n_out = _trained(True)
    zeroed, z_controller, z_out = _trained(False)
    assert n_controller.sliced and not z_controller.sliced
    assert narrowed.loss_curve == pytest.approx(zeroed.loss_curve, rel=1e-5)
    for slot, kappa in n_controller.kappa.items():
        assert float(kappa.detach()) == pytest.approx(float(z_controller.kappa[slot].detach()), abs=1e-5)
        assert n_controller.trajectory[slot] == z_controller.trajectory[slot]
    assert n_out.shape == z_out.shape
    assert torch.allclose(n_out, z_out, rtol=1e-4, atol=1e-5)
