"""Named configurations of the dynamic slots: the paper's setups (docs/method.md).

Gómez & Bäckström (2026) make only some widths dynamic: the mel bands of the VAD CRNN; one
model width of the VAD transformer, which its later layers follow; one or all four residual
stages of the anti-spoofing ResNet. Without a preset, every slot of the task is dynamic
(this benchmark's extension).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from bench.config import ConfigError


@dataclass(frozen=True)
class Preset:
    slots: list[str]  # the dynamic slots
    ties: list[list[str]] = field(default_factory=list)  # groups of slots that share one width parameter


def _presets(task, method: str) -> dict[str, Preset]:
    """The presets that exist for `task` (by name and model family) and `method`."""
    if task.name == "vad" and task.config.model == "crnn":
        return {"paper": Preset(["n_mels"])}
    if task.name == "vad" and task.config.model == "transformer":
        # The model width is the mel band count. Noise injection ties the per-head width and
        # the FFN to it (one kappa, each slot at kappa x its full width), as the paper's
        # adaptive layers follow the DCL; per-feature gates cannot share a fraction, so the
        # gates' preset gates the model width alone.
        if method == "noise_injection":
            return {"paper": Preset(["n_mels", "head_dim", "ffn"], [["n_mels", "head_dim", "ffn"]])}
        return {"paper": Preset(["n_mels"])}
    if task.name == "antispoof":
        stages = [s for s in task.width_slots()]
        return {"paper": Preset(stages), **{f"paper_{s}": Preset([s]) for s in stages}}
    return {}


def preset_slots(task, preset: str, method: str) -> Preset:
    """The preset `preset` of `task`, or a one-line `ConfigError` naming those that exist."""
    found = _presets(task, method)
    if preset not in found:
        family = f" ({task.config.model})" if getattr(task.config, "model", None) else ""
        have = ", ".join(found) or "none"
        raise ConfigError(f"{method}: no preset {preset!r} for task {task.name}{family}; presets: {have}")
    return found[preset]
