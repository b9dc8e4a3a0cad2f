"""The speech models keep the width conventions: zeroing a slot's trailing features with its
masks gives exactly the model built at the smaller width with sliced weights, and the
front ends, output shapes and FLOP counts are what the tasks promise."""

import pytest
import torch

from bench.complexity import measure
from tasks.antispoof import AntispoofConfig, AntispoofTask
from tasks.base import width_masks
from tasks.speech.frontend import LowBandSpectrogram
from tasks.vad import VadConfig, VadTask


def _slice_state(big: dict, small: dict, full: dict, kept: dict) -> dict:
    """Slice every tensor of `big` to the shapes of `small`: along each differing dim, find
    the slot whose g groups of `full` features become g groups of `kept` ones, keep the
    leading features of each group."""
    out = {}
    for name, tensor in big.items():
        target = small[name].shape
        for dim, (b, s) in enumerate(zip(tensor.shape, target)):
            if b == s:
                continue
            slots = [k for k in full if b % full[k] == 0 and s == b // full[k] * kept[k]]
            assert len(slots) == 1, f"{name} dim {dim}: {b} -> {s} matches slots {slots}"
            g = b // full[slots[0]]
            tensor = tensor.unflatten(dim, (g, full[slots[0]])).narrow(dim + 1, 0, kept[slots[0]]).flatten(dim, dim + 1)
        out[name] = tensor
    return out


def _zero_trailing(model, kept: dict) -> None:
    # A GRU reads its own hidden state: as `methods.dynamic.layout.mask_weights` does, zero
    # the removed units' rows (in each of the 3 gate groups) and hidden-state columns.
    for module in model.modules():
        if isinstance(module, torch.nn.GRU):
            k, h = kept[module.mask.slot], module.hidden_size
            with torch.no_grad():
                for name, p in module.named_parameters():
                    p.unflatten(0, (3, h))[:, k:] = 0
                    if name.startswith("weight_hh"):
                        p[:, k:] = 0
    for slot, masks in width_masks(model).items():
        for mask in masks:

            def keep(x, m, k=kept[slot]):
                shape = [1] * x.dim()
                shape[m.dim] = x.shape[m.dim]
                return x * (torch.arange(x.shape[m.dim]) < k).view(shape).to(x.dtype)

            mask.transform = keep


@pytest.mark.parametrize(
    "task,kept",
    [
        (
            VadTask(VadConfig(model="crnn"), scale="smoke"),
            {"n_mels": 50, "conv1": 41, "conv2": 30, "gru": 23, "head": 17},
        ),
        (VadTask(VadConfig(model="transformer"), scale="smoke"), {"n_mels": 50, "head_dim": 13, "ffn": 97}),
        (AntispoofTask(AntispoofConfig(), scale="smoke"), {"stage1": 5, "stage2": 11, "stage3": 19, "stage4": 37}),
    ],
    ids=["crnn", "transformer", "resnet"],
)
def test_zeroing_trailing_features_equals_the_sliced_smaller_model(task, kept):
    torch.manual_seed(0)
    full = task.width_slots()
    big = task.build_model()
    with torch.no_grad():  # non-trivial norm statistics, so the check covers them
        for module in big.modules():
            if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
                module.running_mean.uniform_(-1, 1)
                module.running_var.uniform_(0.5, 2)
                module.weight.uniform_(0.5, 1.5)
                module.bias.uniform_(-0.5, 0.5)
    small = task.build_model(kept)
    small.load_state_dict(_slice_state(big.state_dict(), small.state_dict(), full, kept))
    wave = 0.1 * torch.randn(2, 8000)
    big.eval(), small.eval()
    with torch.no_grad():
        dense = big(wave)
        _zero_trailing(big, kept)
        masked = big(wave)
        assert torch.allclose(masked, small(wave), atol=1e-4, rtol=1e-4)
        assert not torch.allclose(masked, dense, atol=1e-3)  # the masks did act
    assert measure(small, task.example_input()).macs < measure(task.build_model(), task.example_input()).macs


@pytest.mark.parametrize("model", ["crnn", "transformer"])
def test_vad_models_give_one_logit_per_10ms_frame_and_count_their_front_end(model):
    task = VadTask(VadConfig(model=model), scale="smoke")
    net = task.build_model().eval()
    with torch.no_grad():
        assert net(torch.zeros(2, 32000)).shape == (2, 201)
    cx = measure(net, task.example_input())
    assert cx.uncounted == ()
    assert cx.by_operator.get("stft", 0) > 0  # the log-mel front end is part of the count
    # halving the mel bands shrinks the front end's filterbank product and what follows
    assert measure(task.build_model({"n_mels": 40}), task.example_input()).macs < cx.macs


@pytest.mark.parametrize("front", ["lowband", "lfcc"])
def test_antispoof_resnet_has_resnet34_block_counts_and_width_multiplier(front):
    task = AntispoofTask(AntispoofConfig(width=0.25, front_end=front), scale="smoke")
    assert task.width_slots() == {"stage1": 16, "stage2": 32, "stage3": 64, "stage4": 128}
    net = task.build_model()
    assert [len(stage) for stage in net.stages] == [3, 4, 6, 3]
    with torch.no_grad():
        assert net.eval()(torch.zeros(3, 16000)).shape == (3,)
    cx = measure(net, task.example_input())
    assert cx.uncounted == () and cx.by_operator.get("stft", 0) > 0


def test_resnet_blocks_start_as_their_shortcut():
    # zero-initialised last norm: every block's output is relu(shortcut(x)) before training
    net = AntispoofTask(scale="smoke").build_model().train()
    for block in (b for stage in net.stages for b in stage):
        x = torch.randn(4, block.conv1.in_channels, 9, 12)
        with torch.no_grad():
            assert torch.equal(block(x), torch.relu(block.shortcut(x)))


def test_low_band_spectrogram_keeps_0_to_max_hz_at_15_6_hz_bins():
    front = LowBandSpectrogram(max_hz=500.0)
    t = torch.arange(16000) / 16000
    spec = front(torch.stack([torch.sin(2 * torch.pi * 250 * t), torch.sin(2 * torch.pi * 62.5 * t)]))
    assert spec.shape == (2, 33, 16000 // 256 + 1)  # bins 0, 15.6, ..., 500 Hz
    assert spec[0].mean(-1).argmax() == 16 and spec[1].mean(-1).argmax() == 4
    with pytest.raises(ValueError, match="keeps 1 bins"):
        LowBandSpectrogram(max_hz=10.0)
