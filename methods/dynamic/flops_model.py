"""A differentiable FLOP model: a task's FLOPs as a function of continuous slot widths.

Every layer the tasks use costs at most a product of two widths (a Linear or convolution
`in x out`, a GRU `H x (I + H)`, attention `L x S x d`, elementwise work `x w`), so a model's
FLOPs are a quadratic polynomial in its slot widths. Rather than writing each layer's
formula by hand (and risking a second, diverging counter), the polynomial is fitted to the
benchmark's one counter at 1 + 2n + n(n-1)/2 integer width settings, which determine it
exactly, and then checked at other settings. So at integer widths the model agrees with
`bench.complexity.measure` on the consolidated model by construction, and the check catches
a task whose cost is not quadratic.
"""

from __future__ import annotations

import itertools
import random

import numpy as np
import torch

from bench.complexity import measure
from bench.config import ConfigError
from bench.shared_state import SharedState


class FlopsModel:
    """FLOPs (2 x MACs per example input) of `task`'s model as a polynomial in `slots`' widths."""

    @classmethod
    def for_task(cls, task, slots: list[str], shared: SharedState | None = None) -> FlopsModel:
        """The fitted model of `task` (by name and config) and `slots`, fitted once per shared
        state (`RunContext.shared`) if given: a fit traces the model ~20 times, seconds on the
        speech tasks, and planning and every run of a method ask for the same one. The fit
        builds models, which draws from torch's global generator: it draws from a forked one,
        or a run's initial weights would depend on whether the fit was memoised."""

        def fit() -> FlopsModel:
            with torch.random.fork_rng(devices=[]):
                return cls(task, slots)

        if shared is None:
            return fit()
        return shared.memo("flops_model", (task.name, repr(task.config), tuple(slots)), fit, keep=64)

    def __init__(self, task, slots: list[str], check_points: int = 3, tolerance: float = 0.01):
        self.task, self.slots = task, list(slots)
        self.full = task.width_slots()
        self.example = task.example_input()
        points = self._design_points()
        values = np.array([self._count(p) for p in points], dtype=np.float64)
        design = np.array([[self._monomial(p, t) for t in self.terms] for p in points], dtype=np.float64)
        self.coef, *_ = np.linalg.lstsq(design, values, rcond=None)
        self._quadratic_form()
        self.dense = float(self._count({s: self.full[s] for s in self.slots}))
        self._check(check_points, tolerance)

    def _quadratic_form(self) -> None:
        """Coefficients as c + a.w + w.B.w, evaluated in three tensor operations per step. These
        float64 CPU tensors are the fit; `_on` gives copies on the widths' device and dtype."""
        n = len(self.slots)
        self._copies: dict[tuple[torch.device, torch.dtype], tuple[torch.Tensor, ...]] = {}
        self.constant = torch.tensor(0.0, dtype=torch.float64)
        self.linear = torch.zeros(n, dtype=torch.float64)
        self.quadratic = torch.zeros(n, n, dtype=torch.float64)
        for c, term in zip(self.coef, self.terms):
            if len(term) == 0:
                self.constant += c
            elif len(term) == 1:
                self.linear[term[0]] += c
            else:
                self.quadratic[term[0], term[1]] += c

    def _count(self, widths: dict[str, int]) -> int:
        return measure(self.task.build_model(widths), self.example).flops

    def _monomial(self, point: dict[str, float], term: tuple[int, ...]) -> float:
        out = 1.0
        for i in term:
            out *= point[self.slots[i]]
        return out

    def _levels(self, slot: str) -> list[int]:
        """Up to three distinct widths per slot: enough to pin down a quadratic."""
        n = self.full[slot]
        return list(dict.fromkeys([n, max(1, n // 2), max(1, n // 4)]))

    def _design_points(self) -> list[dict[str, int]]:
        """Full width; each slot alone at its other levels; each pair of slots at half width.

        These points determine every term exactly; a slot with fewer than three possible
        levels (width 1 or 2) keeps only the terms its levels can determine.
        """
        levels = {s: self._levels(s) for s in self.slots}
        full = {s: self.full[s] for s in self.slots}
        self.terms = [()]
        points = [dict(full)]
        for i, s in enumerate(self.slots):
            self.terms += [(i,), (i, i)][: len(levels[s]) - 1]
            points += [{**full, s: level} for level in levels[s][1:]]
        for (i, a), (j, b) in itertools.combinations(enumerate(self.slots), 2):
            if len(levels[a]) > 1 and len(levels[b]) > 1:
                self.terms.append((i, j))
                points.append({**full, a: levels[a][1], b: levels[b][1]})
        return points

    def _check(self, n_points: int, tolerance: float) -> None:
        rng = random.Random(0)
        for _ in range(n_points):
            point = {s: rng.randint(1, self.full[s]) for s in self.slots}
            expected = self._count(point)
            got = float(self(dict(point)))
            if abs(got - expected) > tolerance * max(expected, 1):
                raise ConfigError(
                    f"task {self.task.name}: FLOPs are not quadratic in widths {self.slots} (at {point}: counter "
                    f"{expected}, fit {got:.0f})"
                )

    def _on(self, device: torch.device, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(c, a, B) on `device` in `dtype`, copied once per device and dtype."""
        key = (device, dtype)
        if key not in self._copies:
            fit = (self.constant, self.linear, self.quadratic)
            self._copies[key] = tuple(t.to(device=device, dtype=dtype) for t in fit)
        return self._copies[key]

    def __call__(self, widths: dict[str, torch.Tensor | float]) -> torch.Tensor:
        """FLOPs at (possibly continuous, differentiable) widths of `self.slots`, as float32.

        Computed in float64 where the widths are (the model's device during training; the
        CPU for Python numbers), so the cost and its gradient are the same numbers on every
        device; the polynomial is a handful of operations, so float64 costs nothing there."""
        values = [widths[s] for s in self.slots]
        tensor = next((v for v in values if isinstance(v, torch.Tensor)), None)
        device = tensor.device if tensor is not None else self.constant.device
        w = torch.stack([torch.as_tensor(v, dtype=torch.float64, device=device) for v in values])
        constant, linear, quadratic = self._on(device, torch.float64)
        return (constant + linear @ w + w @ quadratic @ w).float()

    def ratio(self, widths: dict[str, torch.Tensor | float]) -> torch.Tensor:
        """FLOPs relative to the full-width model: the cost term of the loss."""
        return self(widths) / self.dense
