"""The task interface: a model family parameterised by named widths, its data, loss and metric.

A task is everything a method needs to know about a problem, and nothing about how to
shrink it. Width *slots* are the sizes a method may change (hidden units, channels, mel
bands, ...); `build_model(widths)` builds the family member at those widths, so a
compacted candidate is rebuilt from its widths alone.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import nn
from torch.utils.data import Dataset

from bench.config import ConfigError, TrainRecipe


class WidthMask(nn.Module):
    """Marks where the features of width slot `slot` leave their producer (along `dim`).

    Identity in the dense model, so tasks declare slots once and every method derives its
    model from the same definition: a width-learning method binds `transform(x, mask)` to
    mask, gate or add noise to those features. Put a mask where consumers read the
    features (after the activation), so zeroing a feature is the same as removing it; all
    masks of one slot share its width (e.g. every block output of a residual stage).

    `relu=True`: the mask applies the ReLU before it, so that a width learner can do both
    in one pass over the activation (`relu_transform(x, mask)`, given the features before
    the ReLU); otherwise `transform` gets the ReLU's output.
    """

    def __init__(self, slot: str, dim: int = -1, relu: bool = False):
        super().__init__()
        self.slot, self.dim, self.relu = slot, dim, relu
        self.transform: Callable[[torch.Tensor, WidthMask], torch.Tensor] | None = None
        self.relu_transform: Callable[[torch.Tensor, WidthMask], torch.Tensor] | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.relu:
            if self.relu_transform is not None:
                return self.relu_transform(x, self)
            x = torch.relu(x)
        return x if self.transform is None else self.transform(x, self)

    def extra_repr(self) -> str:
        return f"slot={self.slot!r}, dim={self.dim}" + (", relu=True" if self.relu else "")


def width_masks(model: nn.Module) -> dict[str, list[WidthMask]]:
    """Slot name → the model's masks of that slot, in module order."""
    found: dict[str, list[WidthMask]] = {}
    for module in model.modules():
        if isinstance(module, WidthMask):
            found.setdefault(module.slot, []).append(module)
    return found


class FeatureBank(nn.Module):
    """A layer whose output features are rows of its own tensors (e.g. a filterbank buffer)
    and that has no input features to follow: a front end computed from the raw input.

    Structured pruning drops its features through `keep_features`, so the layers after it
    shrink with it; methods that keep the first K features may first `spread_features`.
    A subclass implements `out_features` and `keep_features` (and `spread_features` where
    its features have an order that a prefix should span).
    """

    @property
    def out_features(self) -> int:
        """How many output features the layer has now."""
        raise NotImplementedError

    def keep_features(self, idxs: Sequence[int]) -> None:
        """Keep only the output features `idxs` (sorted), in place; persistent tensors stay registered."""
        raise NotImplementedError

    def spread_features(self) -> None:
        """Reorder the features (in place) so that every prefix spans their whole range."""
        raise NotImplementedError(f"{type(self).__name__} has no order to spread its features by")

    @classmethod
    def can_spread(cls) -> bool:
        return cls.spread_features is not FeatureBank.spread_features


def feature_banks(model: nn.Module, spreadable: bool = False) -> list[FeatureBank]:
    """The model's `FeatureBank` layers, in module order (only those that can spread if `spreadable`)."""
    return [m for m in model.modules() if isinstance(m, FeatureBank) and (m.can_spread() or not spreadable)]


@dataclass(frozen=True)
class Evaluation:
    """What `Task.evaluate` returns: the primary error (lower is better) and its breakdowns."""

    error: float  # the task's primary metric (e.g. EER in %, normalised MSE); lower is better
    breakdowns: dict[str, float] = field(default_factory=dict)  # same metric per group, e.g. per SNR range
    secondary: dict[str, float] = field(default_factory=dict)  # other metrics (AUC, ...)


class Task:
    """Base class of every task; subclasses register with `@register_task(name)`.

    Subclasses set `description`, `Config`, `metric`, `example_seconds`, and implement
    `width_slots`, `build_model`, `recipe`, `dataset`, `loss` and `evaluate`.
    """

    name: ClassVar[str]  # set by @register_task
    description: ClassVar[str] = ""  # one line for `bench list`
    Config: ClassVar[type]  # dataclass of the task's settings (`--set task.KEY=VALUE`)
    metric: ClassVar[str] = "error"  # name of the primary error metric, for tables and plots
    # The error of a model that ignores its input (EER 50 %, NMSE 1); a run whose error is
    # worse than this by a margin diverged and is stored as failed, and reports measure
    # quality against it (hypervolume). None: not declared.
    chance_error: ClassVar[float | None] = None
    metric_label: ClassVar[str] = ""  # the metric as an axis label, e.g. "EER (%)"; empty: the metric's name
    metric_unit: ClassVar[str] = ""  # the metric's unit, e.g. "%"; empty: a ratio without unit
    # How much worse than the dense model still counts as the same quality (e.g. 0.5 points
    # of EER); None: 5 % of the dense model's error.
    iso_tolerance: ClassVar[float | None] = None
    breakdown_label: ClassVar[str] = "group"  # what the evaluation's breakdown keys are, e.g. "SNR range"
    # Seconds of audio in `example_input()`: FLOPs are divided by it to give FLOP/s.
    # None for tasks whose input is not audio (FLOPs are then per example).
    example_seconds: ClassVar[float | None] = None
    # Values of `Config.model` when the task has several model families (e.g. crnn,
    # transformer): tests and reports treat each family as its own model.
    model_families: ClassVar[tuple[str, ...]] = ()
    # What `--task default` (the main job) runs of this task: False leaves the task out; a
    # tuple of families runs only those (None: every family). `--task all` runs everything.
    in_default_suite: ClassVar[bool] = True
    left_out_because: ClassVar[str] = ""  # why the main job leaves it out, printed when it does
    default_families: ClassVar[tuple[str, ...] | None] = None

    @classmethod
    def metric_info(cls) -> dict[str, Any]:
        """What reports need to know of the metric, stored with every row (reports never
        name a metric): name, axis label, chance level, iso-quality tolerance, breakdowns."""
        return {
            "name": cls.metric,
            "label": cls.metric_label or cls.metric,
            "unit": cls.metric_unit,
            "chance": cls.chance_error,
            "iso_tolerance": cls.iso_tolerance,
            "breakdowns": cls.breakdown_label,
        }

    def __init__(self, config: Any | None = None, scale: str = "small", data_root: str | Path | None = None):
        self.config = config if config is not None else self.Config()
        self.scale = scale
        self.data_root = Path(data_root) if data_root else None

    # --- the model family -------------------------------------------------------------
    def width_slots(self) -> dict[str, int]:
        """Slot name → full (largest) width, in the order the model uses them."""
        raise NotImplementedError

    def build_model(self, widths: Mapping[str, int] | None = None) -> nn.Module:
        """A fresh model at `widths` (missing slots at full width); a plain `nn.Module`
        with a `WidthMask` after each producer of a slot's features."""
        raise NotImplementedError

    def resolve_widths(self, widths: Mapping[str, int] | None = None) -> dict[str, int]:
        """Fill missing slots with full widths and reject unknown slots or out-of-range values."""
        full = self.width_slots()
        widths = dict(widths or {})
        unknown = sorted(set(widths) - set(full))
        if unknown:
            raise ConfigError(f"unknown width slot {unknown[0]!r} for task {self.name}; slots: {', '.join(full)}")
        for slot, value in widths.items():
            if not isinstance(value, int) or not 1 <= value <= full[slot]:
                raise ConfigError(
                    f"width {slot}={value!r} for task {self.name} must be an integer in [1, {full[slot]}]"
                )
        return {slot: widths.get(slot, n) for slot, n in full.items()}

    # --- data, training and evaluation ---------------------------------------------------
    def recipe(self) -> TrainRecipe:
        """The training recipe at this task's scale; every method trains with it."""
        raise NotImplementedError

    def dataset(self, split: str) -> Dataset:
        """The ``train``, ``val`` or ``test`` split; items are whatever `loss` takes batched."""
        raise NotImplementedError

    def prepare(self) -> None:
        """Build (generate, download-free) and cache every split now; the runner calls it once
        before parallel runs so worker processes read the data rather than race to build it."""

    def loss(self, model: nn.Module, batch: Any) -> torch.Tensor:
        """Scalar training loss of `model` on one batch of `dataset("train")`."""
        raise NotImplementedError

    def evaluate(self, model: nn.Module, split: str = "test") -> Evaluation:
        """Primary error and breakdowns of `model` (in eval mode) on `split`."""
        raise NotImplementedError

    def example_input(self) -> torch.Tensor:
        """The input every complexity measurement uses: one second of audio, or one example."""
        raise NotImplementedError

    # --- deployment: what latency is measured on -------------------------------------------
    def latency_input(self, seconds: float) -> torch.Tensor:
        """Input for timing the model: `seconds` of audio for audio tasks (one example otherwise)."""
        return self.example_input()

    def streamer(self, model: nn.Module) -> Streamer | None:
        """`model` as a step over chunks of audio with its state carried, or None: not a streaming model."""
        return None

    @property
    def flops_unit(self) -> str:
        return "FLOP/s (per second of audio)" if self.example_seconds else "FLOPs per example"


class Streamer(nn.Module):
    """A model run on audio as it arrives: ``forward(chunk, *state) -> (outputs, *state)``.

    `start(wave)` gives the initial state from the first samples of a recording and the
    samples still to feed. The first call takes `lookahead` samples (its outputs are
    dropped: they belong to frames the model cannot score yet); every later chunk is a
    multiple of `hop` samples. All tensors, so the step exports to ONNX as it is.
    """

    sample_rate: int  # samples per second of the audio
    hop: int  # chunk lengths are multiples of this many samples
    lookahead: int  # samples of the first call, whose outputs are dropped
    state_names: tuple[str, ...]  # names of the state tensors, in order

    def start(self, wave: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
        raise NotImplementedError
