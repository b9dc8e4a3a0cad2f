"""Plan runs: resolve task and method names and `--set` strings into `RunSpec`s, each
setting checked before any training. A run is one (task, method, resolved config, knob
value, seed); its key is stable, so re-running skips runs that finished.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace
from functools import cached_property
from typing import Any

from bench import targets
from bench.config import SCALES, ConfigError, TrainRecipe, apply_overrides, config_hash, field_names, parse_set, to_dict
from bench.registry import get_method_class, get_task_class, method_names, task_names

DEFAULT_SEEDS = (0, 1, 2)
DEFAULT_SUITE = "default"  # `--task default`: what each task puts in the main job


def left_out_of_default_suite() -> list[str]:
    """What `--task default` leaves out that `--task all` runs: a task (with why, when it says), or a task's family."""
    out = []
    for name in task_names():
        cls = get_task_class(name)
        if not cls.in_default_suite:
            out.append(f"{name} ({cls.left_out_because})" if cls.left_out_because else name)
        elif cls.default_families:
            out += [f"{name} ({f})" for f in cls.model_families if f not in cls.default_families]
    return out


# The training budget every candidate gets, stored in each resolved config.
BUDGET_RULE = (
    "every candidate's lineage has train.steps optimizer steps: the dense model, a width learner's "
    "training, pruning's pre-training + pruning steps + fine-tuning, each search trial"
)


@dataclass(frozen=True)
class RunSpec:
    """Everything that defines one run; its `run_key` identifies it in the store."""

    task: str
    method: str
    seed: int
    scale: str
    task_config: Any  # the task's Config dataclass, overrides applied
    method_config: Any  # the method's Config dataclass, overrides applied (one knob value)
    recipe: TrainRecipe  # the task's recipe at this scale, overrides applied
    data_root: str | None = None  # where real corpora live (not part of the key)

    @cached_property
    def config(self) -> dict[str, Any]:
        return {
            "task": {"name": self.task, **to_dict(self.task_config)},
            "method": {"name": self.method, **to_dict(self.method_config)},
            "train": to_dict(self.recipe),
            "budget": {"train_steps": self.recipe.steps, "rule": BUDGET_RULE},
            "scale": self.scale,
        }

    @cached_property
    def config_hash(self) -> str:
        return config_hash(self.config)

    @property
    def run_key(self) -> str:
        return f"{self.task}/{self.method}/{self.config_hash}/seed{self.seed}"

    def build_task(self):
        return get_task_class(self.task)(self.task_config, scale=self.scale, data_root=self.data_root)

    def build_method(self):
        return get_method_class(self.method)(self.method_config)


def _expand(names: Iterable[str], valid: list[str], kind: str, in_all: list[str] | None = None) -> list[str]:
    out: list[str] = []
    for name in names:
        for part in name.split(","):
            part = part.strip()
            if part == "all":
                out.extend(valid if in_all is None else in_all)
            elif part not in valid:
                raise ConfigError(f"unknown {kind} {part!r}; choose from: {', '.join(valid)} (or all)")
            else:
                out.append(part)
    return list(dict.fromkeys(out))


def _scoped(overrides: list[tuple[str, str, str]], generic: str, name: str, config_cls: type) -> dict[str, str]:
    """Overrides aimed at `name`: its own scope always, the generic scope where the key exists."""
    keys = set(field_names(config_cls))
    chosen = {k: v for scope, k, v in overrides if scope == generic and k in keys}
    chosen.update({k: v for scope, k, v in overrides if scope == name})
    return chosen


def plan_runs(
    tasks: Iterable[str],
    methods: Iterable[str],
    seeds: Iterable[int] = DEFAULT_SEEDS,
    scale: str = "small",
    settings: list[str] | None = None,
    data_root: str | None = None,
    flop_targets: list[float] | None = None,
) -> list[RunSpec]:
    """Resolve names and `--set` strings into run specs; every setting is checked here,
    before any training, and raises `ConfigError` with a one-line message if wrong.

    `flop_targets` (fractions of the dense FLOP/s) replace the targets of every method that
    has them (`Method.target_field`) unless a `--set` names that field; None keeps the
    defaults, whose values under a method's floor are left out."""
    given = targets.check_targets(flop_targets) if flop_targets is not None else None
    if scale not in SCALES:
        raise ConfigError(f"unknown scale {scale!r}; choose from: {', '.join(SCALES)}")
    methods_given = {part.strip() for name in methods for part in name.split(",")}
    tasks = list(tasks)
    suite = [t for t in tasks if t.strip() == DEFAULT_SUITE]
    task_list = _expand(
        [t for t in tasks if t.strip() != DEFAULT_SUITE] + (["all"] if suite else []),
        task_names(),
        "task",
        [n for n in task_names() if not suite or get_task_class(n).in_default_suite],
    )
    method_list = _expand(methods, method_names(), "method", [m for m in method_names() if get_method_class(m).in_all])
    seeds = list(dict.fromkeys(int(s) for s in seeds))
    if any(s < 0 for s in seeds):
        raise ConfigError(f"seeds must be whole numbers >= 0, got {min(seeds)}")
    overrides = parse_set(settings)
    _check_scopes(overrides, task_list, method_list)

    specs: list[RunSpec] = []
    planned_once: set[tuple[str, str]] = set()
    for task_name, task_overrides in _task_variants(task_list, overrides, default_suite=bool(suite)):
        task_cls = get_task_class(task_name)
        task_config = apply_overrides(task_cls.Config(), task_overrides, f"task {task_name}")
        task = task_cls(task_config, scale=scale, data_root=data_root)
        recipe = apply_overrides(
            task.recipe(), {k: v for s, k, v in overrides if s == "train"}, f"train (task {task_name})"
        )
        floors: dict[str, float | None] = {}
        for method_name in method_list:
            method_cls = get_method_class(method_name)
            chosen = _scoped(overrides, "method", method_name, method_cls.Config)
            field_name = method_cls.target_field
            if given is not None and field_name and field_name not in chosen:
                chosen = {field_name: ",".join(map(str, given)), **chosen}
            method_config = apply_overrides(method_cls.Config(), chosen, f"method {method_name}")
            method = method_cls(method_config)
            if not method.applies_to(task):
                if "all" in methods_given:
                    continue
                raise ConfigError(f"method {method_name} does not apply to task {task_name}")
            method.validate(task)
            method.check_budget(recipe)
            if field_name:
                floors[method_name] = method.floor(task)
            if not method_cls.per_model_family:  # the same for every model family: planned with the first one only
                if (task_name, method_name) in planned_once:
                    continue
                planned_once.add((task_name, method_name))
            for one in _knob_values(method, task):
                for seed in seeds:
                    specs.append(RunSpec(task_name, method_name, seed, scale, task_config, one, recipe, data_root))
        if given is not None:
            family = task_overrides.get("model")
            targets.check_reachable(given, floors, f"task {task_name}" + (f" ({family})" if family else ""))
    return specs


def _task_variants(
    task_list: list[str], overrides: list[tuple[str, str, str]], default_suite: bool = False
) -> list[tuple[str, dict[str, str]]]:
    """(task, its overrides) per run target: every model family of a task that has several
    (in the default suite, its default families), unless `task.model` picks one."""
    out = []
    for name in task_list:
        cls = get_task_class(name)
        chosen = _scoped(overrides, "task", name, cls.Config)
        families = list(cls.default_families or cls.model_families) if default_suite else list(cls.model_families)
        families = [] if "model" in chosen else families
        out += [(name, {**chosen, "model": f}) for f in families] or [(name, chosen)]
    return out


def _check_scopes(overrides: list[tuple[str, str, str]], tasks: list[str], methods: list[str]) -> None:
    scopes = {"task": tasks, "method": methods}
    for scope, key, _ in overrides:
        if scope == "train":
            if key not in field_names(TrainRecipe):
                raise ConfigError(f"unknown setting train.{key}; valid: {', '.join(field_names(TrainRecipe))}")
        elif scope in scopes:
            owners = [
                n
                for n in scopes[scope]
                if key in field_names((get_task_class if scope == "task" else get_method_class)(n).Config)
            ]
            if not owners:
                valid = sorted(
                    {
                        f
                        for n in scopes[scope]
                        for f in field_names((get_task_class if scope == "task" else get_method_class)(n).Config)
                    }
                )
                raise ConfigError(
                    f"unknown setting {scope}.{key} for {', '.join(scopes[scope])}; valid: "
                    f"{', '.join(valid) or '(none)'}"
                )
        elif scope not in tasks and scope not in methods:
            raise ConfigError(
                f"unknown scope {scope!r} in --set {scope}.{key}; use task., method., train. or a selected task or "
                "method name"
            )


def _knob_values(method: Any, task: Any) -> list[Any]:
    """One config per knob value (a one-element list each), so each value is its own run."""
    if method.knob is None:
        return [method.config]
    return [replace(method.config, **{method.knob: [v]}) for v in method.knob_values(task)]


def run_knob(method: Any) -> Any:
    """The scalar knob value of a planned run (its config holds a one-element list), or None."""
    return getattr(method.config, method.knob)[0] if method.knob else None


def start_order(spec: RunSpec) -> int:
    """Sort key of the parallel queue: searches first (the longest runs: one started last
    leaves a core idle at the end), the rest in plan order."""
    return 0 if get_method_class(spec.method).runs_long else 1
