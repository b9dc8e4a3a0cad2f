"""What the speech tasks share: the example input, a recipe per scale, splits built once."""

from __future__ import annotations

from typing import ClassVar

import numpy as np
import torch

from bench.config import TrainRecipe
from tasks.base import Task

SPLITS = ("train", "val", "test")


class SpeechTask(Task):
    """A task on 16 kHz audio whose model includes its front end.

    Complexity is measured on one second of audio, so stored FLOPs are FLOP/s. Each split
    is built once (`build_split`, cached on disk by the subclass) and kept in memory.
    """

    example_seconds = 1.0
    sample_rate: ClassVar[int] = 16000
    recipes: ClassVar[dict[str, TrainRecipe]]  # the training recipe per scale

    def __init__(self, config=None, scale="small", data_root=None):
        super().__init__(config, scale, data_root)
        self.config.validate()
        self._splits: dict[str, dict[str, np.ndarray]] = {}

    def recipe(self) -> TrainRecipe:
        return self.recipes[self.scale]

    def example_input(self) -> torch.Tensor:
        return 0.1 * torch.randn(1, 16000, generator=torch.Generator().manual_seed(0))

    def latency_input(self, seconds: float) -> torch.Tensor:
        n = round(seconds * self.sample_rate)
        return 0.1 * torch.randn(1, n, generator=torch.Generator().manual_seed(0))

    def data(self, split: str) -> dict[str, np.ndarray]:
        """The split's cached arrays (see `build_split`)."""
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r}; use train, val or test")
        if split not in self._splits:
            self._splits[split] = self.build_split(split)
        return self._splits[split]

    def prepare(self) -> None:
        for split in SPLITS:
            self.data(split)

    def build_split(self, split: str) -> dict[str, np.ndarray]:
        raise NotImplementedError
