"""Torch views of cached arrays, and batched inference for evaluation."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset

from bench.device import model_device


class AudioDataset(Dataset):
    """Items ``(waveform float32 in [-1, 1], target float32)`` from int16 audio rows; the
    conversion happens per item so a split is held in memory as int16. Indexing with a list
    of indices gives a whole batch at once (`batch_indexing`, used by the training loop)."""

    batch_indexing = True

    def __init__(self, audio: np.ndarray, targets: np.ndarray):
        if len(audio) != len(targets):
            raise ValueError(f"{len(audio)} audio rows but {len(targets)} targets")
        self.audio = torch.from_numpy(np.ascontiguousarray(audio))
        self.targets = torch.from_numpy(np.ascontiguousarray(targets).astype(np.float32))

    def __len__(self) -> int:
        return len(self.audio)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.audio[i].float() / 32768.0, self.targets[i]


@torch.no_grad()
def batched_outputs(model: nn.Module, audio: np.ndarray, batch_size: int = 32) -> np.ndarray:
    """Model outputs on int16 audio rows, concatenated along the first axis (float64)."""
    model.eval()
    device = model_device(model)
    outs = []
    for start in range(0, len(audio), batch_size):
        wave = torch.from_numpy(audio[start : start + batch_size].astype(np.float32) / 32768.0).to(device)
        outs.append(model(wave).double().cpu().numpy())
    return np.concatenate(outs)
