"""Multi-objective width search with Optuna: each trial trains the task's model at widths
the sampler proposes and reports (validation error, FLOPs); the candidates are the study's
Pareto-optimal trials: per FLOP/s target, the trial with the lowest validation error at or
under it, then the rest of the front without a target. Each trial trains the run's whole
budget (`train.steps`); the search cost is all trials' steps.

The study lives in the result store's database (Optuna's RDB storage at `ctx.shared.study_storage()`),
named after the run key, with `load_if_exists`: a killed search resumes and runs only the
trials still missing (`trials` counts completed ones). Each completed trial keeps its
trained weights (a user attribute), so the Pareto models are never retrained. The
full-width start trial is the dense baseline's model (trained once per task, recipe and
seed). Search cost = training seconds of all completed
trials (the dense model's included), earlier processes included.
"""

from __future__ import annotations

import base64
import functools
import io
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import optuna
import sqlalchemy as sa
import torch

from bench.complexity import flops_at, measure
from bench.hooks import NonFiniteLossError
from bench.registry import register_method
from bench.targets import DEFAULT_TARGETS, TOLERANCE
from methods.base import Candidate, Method, RunContext
from methods.pruning.pretrain import dense_model

SAMPLERS = ("nsga2", "tpe")


@dataclass(frozen=True)
class OptunaConfig:
    trials: int = 6  # completed trials per search (resumed searches count earlier ones); each trains a model
    sampler: str = "nsga2"  # nsga2 (NSGA-II) | tpe (multivariate multi-objective TPE)
    population: int = 4  # NSGA-II population size; TPE: random startup trials
    slots: list[str] = field(default_factory=list)  # searched slots; empty = all (the rest stay at full width)
    log_widths: bool = True  # sample widths on a log scale (as many small models as large ones)
    start_full: bool = True  # the first trial is the full-width model
    # FLOP/s targets (fractions of the dense model's): per target, the trial with the lowest
    # validation error at or under it (within the 10 % tolerance) is a candidate
    targets: list[float] = field(default_factory=lambda: list(DEFAULT_TARGETS))

    def validate(self) -> None:
        if self.trials < 1:
            raise ValueError(f"trials must be >= 1, got {self.trials}")
        if self.sampler not in SAMPLERS:
            raise ValueError(f"unknown sampler {self.sampler!r}; choose from {', '.join(SAMPLERS)}")
        if self.population < 2:
            raise ValueError(f"population must be >= 2, got {self.population}")
        bad = [t for t in self.targets if not 0 < t <= 1]
        if bad:
            raise ValueError(f"targets must be in (0, 1], got {bad[0]}")


def encode_state(model: torch.nn.Module) -> str:
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def decode_state(text: str) -> dict:
    return torch.load(io.BytesIO(base64.b64decode(text)), map_location="cpu", weights_only=True)


def rdb_storage(url: str) -> optuna.storages.RDBStorage:
    """Optuna's RDB storage at `url` (SQLite waits up to a minute for a lock)."""
    kwargs = {"connect_args": {"timeout": 60}} if url.startswith("sqlite") else {}
    return optuna.storages.RDBStorage(url, engine_kwargs=kwargs)


def open_study(url: str, name: str, attempts: int = 8) -> optuna.Study:
    """Create or load study `name` in the database at `url`, waiting out what processes
    opening one database at once run into: SQLite's locks, another process creating
    Optuna's tables first ("table ... already exists", or an IntegrityError on
    alembic_version) or the same study."""
    for attempt in range(attempts):
        try:
            storage = rdb_storage(url)
            return optuna.create_study(
                storage=storage, study_name=name, directions=["minimize", "minimize"], load_if_exists=True
            )
        except (sa.exc.OperationalError, sa.exc.IntegrityError, optuna.exceptions.DuplicatedStudyError) as err:
            transient = (
                not isinstance(err, sa.exc.OperationalError) or "locked" in str(err) or "already exists" in str(err)
            )
            if attempt == attempts - 1 or not transient:
                raise
            time.sleep(0.2 * 2**attempt)
    raise AssertionError("unreachable")


USER_ATTRS = ("train_seconds", "final_train_loss", "state_dict")  # what a trained trial keeps
COMPLETE, WAITING = optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.WAITING


def complete_trials(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    return study.get_trials(deepcopy=False, states=(COMPLETE,))


def find_twin(study: optuna.Study, widths: dict[str, int]) -> optuna.trial.FrozenTrial | None:
    """A completed, trained trial at exactly `widths`, if any."""
    return next((t for t in complete_trials(study) if t.params == widths and "state_dict" in t.user_attrs), None)


def run_trial(ctx: RunContext, widths: dict[str, int], number: int) -> dict:
    """Trial `number` of a search: train the task's model at `widths` (seeded by the trial
    number), evaluate it on "val" and measure its FLOPs; returns the two objectives (error,
    flops) and the trial's user attributes (train_seconds, final_train_loss, state_dict).
    The method's objective and a Ray Tune trial (bench.sweep) both run this."""
    task = ctx.task
    torch.manual_seed(ctx.seed * 100003 + number)
    model = task.build_model(widths)
    report = ctx.train(model, desc=f"{task.name}/optuna trial {number}")
    return _trial_result(task, model.eval(), report.seconds, report.final_loss)


def dense_trial(ctx: RunContext) -> dict:
    """`run_trial`'s result for the full-width model, from the dense baseline's model
    (`methods.pruning.pretrain`): the same recipe and seed, so not trained again; its
    training seconds still count as this search's cost."""
    model, report = dense_model(ctx)
    return _trial_result(ctx.task, model, report["seconds"], report["final_loss"])


def trial_result(
    ctx: RunContext, study: optuna.Study, widths: dict[str, int], index: int, full: dict[str, int]
) -> dict:
    """The search's one objective, which a serial run and a Ray Tune trial (bench.sweep) both
    call: a twin's values (widths proposed again: no second training), the shared dense
    model at full width, else a model trained at `widths`, seeded by the trial's `index`."""
    twin = find_twin(study, widths)
    if twin is not None:
        return {"error": twin.values[0], "flops": twin.values[1], "duplicate_of": twin.number, "train_seconds": 0.0}
    if widths == full:  # the dense model: trained once, shared with baseline and pruning
        return dense_trial(ctx)
    return run_trial(ctx, widths, index)


RETRY_OF = "retry_of"  # user attribute of a trial that redoes an interrupted one (its number)
DIVERGED = "diverged"  # user attribute of a trial whose training diverged (not retried)


def trial_index(study: optuna.Study, trial: optuna.trial.FrozenTrial | optuna.Trial) -> int:
    """The trial's place in an uninterrupted search: its number less the retries before it (a
    retry takes its interrupted trial's place). Seeds its training and its proposal, so a
    resumed search proposes and trains what an uninterrupted one would."""
    trials = study.get_trials(deepcopy=False)
    while RETRY_OF in trial.user_attrs:
        trial = trials[trial.user_attrs[RETRY_OF]]
    return trial.number - sum(RETRY_OF in t.user_attrs for t in trials[: trial.number])


def retry_interrupted(study: optuna.Study) -> int:
    """Queue again, with the same widths, each trial a killed search left: RUNNING (kill -9;
    the run's claim says no live process runs it) or FAIL by interruption; returns how many."""
    trials = study.get_trials(deepcopy=False)
    retried = {t.user_attrs[RETRY_OF] for t in trials if RETRY_OF in t.user_attrs}
    count = 0
    for t in trials:
        if t.state == optuna.trial.TrialState.RUNNING:
            study.tell(t.number, state=optuna.trial.TrialState.FAIL)
        elif t.state != optuna.trial.TrialState.FAIL or DIVERGED in t.user_attrs:
            continue
        if t.number not in retried and t.params:
            study.enqueue_trial(dict(t.params), user_attrs={RETRY_OF: t.number})
            count += 1
    return count


class PerTrialSeed(optuna.samplers.BaseSampler):
    """`inner` with its random states reseeded from (seed, trial index) before each trial, so
    what it proposes does not depend on how many processes the search took."""

    def __init__(self, make_inner: Callable[[], optuna.samplers.BaseSampler], seed: int):
        self.make_inner, self.seed = make_inner, seed
        self._inner: optuna.samplers.BaseSampler | None = None

    @property
    def inner(self) -> optuna.samplers.BaseSampler:
        if self._inner is None:
            self._inner = self.make_inner()
        return self._inner

    def __getstate__(self) -> dict:
        # Ray Tune pickles its searcher; Optuna's GA samplers hold a lock and cannot be
        # pickled. Their state lives in the study, so a copy builds its own.
        return {**self.__dict__, "_inner": None}

    def _random_states(self) -> list:
        from optuna.samplers._lazy_random_state import LazyRandomState

        found, todo = [], [self.inner]
        while todo:
            for value in vars(todo.pop()).values():
                if isinstance(value, LazyRandomState):
                    found.append(value)
                elif isinstance(value, optuna.samplers.BaseSampler):
                    todo.append(value)
        return found

    def before_trial(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        for state in self._random_states():
            state.rng.seed((self.seed * 1_000_003 + trial_index(study, trial)) % 2**32)
        self.inner.before_trial(study, trial)

    def infer_relative_search_space(self, study, trial):
        return self.inner.infer_relative_search_space(study, trial)

    def sample_relative(self, study, trial, search_space):
        return self.inner.sample_relative(study, trial, search_space)

    def sample_independent(self, study, trial, param_name, param_distribution):
        return self.inner.sample_independent(study, trial, param_name, param_distribution)

    def after_trial(self, study, trial, state, values) -> None:
        self.inner.after_trial(study, trial, state, values)

    def reseed_rng(self) -> None:
        self.inner.reseed_rng()


def _trial_result(task, model: torch.nn.Module, seconds: float, final_loss: float) -> dict:
    error = task.evaluate(model, "val").error
    flops = measure(model, task.example_input()).flops * (1.0 / (task.example_seconds or 1.0))
    return {
        "error": error,
        "flops": flops,
        "train_seconds": seconds,
        "final_train_loss": final_loss,
        "state_dict": encode_state(model),
    }


@register_method("optuna")
class OptunaSearch(Method):
    description = (
        "Optuna multi-objective width search (NSGA-II or TPE): trains each trial, candidates = Pareto "
        "front (error, FLOPs)"
    )
    Config = OptunaConfig
    runs_long = True
    target_field = "targets"
    search = True  # a study of independent trials: a sweep spreads them over the cluster

    def floor(self, task) -> float:
        """FLOP ratio with every searched slot at width 1."""
        return flops_at(task, {s: 1 for s in self.resolve_slots(task)}) / flops_at(task, {})

    def sampler(self, seed: int) -> optuna.samplers.BaseSampler:
        if self.config.sampler == "nsga2":
            return optuna.samplers.NSGAIISampler(population_size=self.config.population, seed=seed)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return optuna.samplers.TPESampler(multivariate=True, n_startup_trials=self.config.population, seed=seed)

    def space(self, task) -> dict[str, optuna.distributions.IntDistribution]:
        """The searched widths, as the objective suggests them."""
        full = task.width_slots()
        return {
            s: optuna.distributions.IntDistribution(1, full[s], log=self.config.log_widths)
            for s in self.resolve_slots(task)
        }

    def prepare(self, study: optuna.Study, task, seed: int) -> None:
        """Give `study` this search's sampler and queue the full-width start trial (once)."""
        # numpy takes seeds below 2**32
        study.sampler = PerTrialSeed(functools.partial(self.sampler, seed % 2**32), seed)
        retry_interrupted(study)
        full = task.width_slots()
        start = {s: full[s] for s in self.resolve_slots(task)}
        queued = study.get_trials(deepcopy=False, states=(COMPLETE, WAITING))
        if self.config.start_full and not any(start in (t.params, t.system_attrs.get("fixed_params")) for t in queued):
            study.enqueue_trial(start)

    # The search capability (`search = True`), which `bench.sweep` drives: Ray Tune's
    # OptunaSearch proposes on this run's own study, each Tune trial runs `run_search_trial`,
    # then `candidates` collects the finished study as a serial run does.

    search_objectives = (("error", "min"), ("flops", "min"))  # what each trial reports, and their directions

    def search_study(self, ctx: RunContext) -> optuna.Study:
        """This run's study, created or loaded (to resume, or to run one trial of it)."""
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        return open_study(ctx.shared.study_storage(), f"bench:{ctx.run_key or ctx.task.name}")

    def prepare_search(self, ctx: RunContext, study: optuna.Study) -> None:
        """Before the missing trials run (once, by the driver): the sampler, interrupted
        trials queued again, the start trial."""
        self.prepare(study, ctx.task, ctx.seed)

    def search_storage(self, ctx: RunContext) -> optuna.storages.BaseStorage:
        return rdb_storage(ctx.shared.study_storage())

    def trials_missing(self, study: optuna.Study) -> int:
        return self.config.trials - len(complete_trials(study))

    def search_space(self, task) -> dict[str, optuna.distributions.IntDistribution]:
        return self.space(task)

    def run_search_trial(self, ctx: RunContext, study: optuna.Study, number: int, params: dict[str, Any]) -> dict:
        """The objective for trial `number` at the widths `params` (error, flops and the
        trial's user attributes), as the serial objective computes it."""
        slots, full = self.resolve_slots(ctx.task), ctx.task.width_slots()
        widths = {s: int(params[s]) for s in slots}
        return trial_result(ctx, study, widths, trial_index(study, study.trials[number]), {s: full[s] for s in slots})

    def record_search_trial(self, trial: optuna.Trial, result: dict) -> None:
        """Keep a finished trial's user attributes, as the serial objective sets them."""
        for key in ("duplicate_of", *USER_ATTRS):
            if key in result:
                trial.set_user_attr(key, result[key])

    def candidates(self, ctx: RunContext) -> Iterator[Candidate]:
        task, cfg = ctx.task, self.config
        slots, full = self.resolve_slots(task), task.width_slots()
        study = self.search_study(ctx)
        done = len(complete_trials(study))
        self.prepare_search(ctx, study)

        def objective(trial: optuna.Trial) -> tuple[float, float]:
            widths = {s: trial.suggest_int(s, 1, full[s], log=cfg.log_widths) for s in slots}
            try:
                index = trial_index(trial.study, trial)
                out = trial_result(ctx, trial.study, widths, index, {s: full[s] for s in slots})
            except NonFiniteLossError:
                trial.set_user_attr(DIVERGED, True)  # fails alone, and is not retried on resume
                raise
            for key, value in out.items():
                if key not in ("error", "flops"):
                    trial.set_user_attr(key, value)
            return out["error"], out["flops"]

        if cfg.trials > done:
            study.optimize(
                objective, n_trials=cfg.trials - done, catch=(NonFiniteLossError,)
            )  # a diverged trial fails alone
        trials = complete_trials(study)
        if not trials:
            raise RuntimeError(f"optuna: no trial of study {study.study_name} completed")
        search = sum(t.user_attrs["train_seconds"] for t in trials)
        trained = [t for t in trials if "state_dict" in t.user_attrs]
        steps = ctx.recipe.steps  # every trial trains the run's whole budget
        dense = flops_at(task, {}, ctx.shared)

        def ratio(t: optuna.trial.FrozenTrial) -> float:
            return flops_at(task, {s: t.params[s] for s in slots}, ctx.shared) / dense

        def candidate(t: optuna.trial.FrozenTrial, label: str, target: float | None) -> Candidate:
            widths = task.resolve_widths({s: t.params[s] for s in slots})
            model = task.build_model(widths)
            model.load_state_dict(decode_state(t.user_attrs["state_dict"]))
            return Candidate(
                model=model.eval(),
                widths=widths,
                label=label,
                train_seconds=t.user_attrs["train_seconds"],
                search_seconds=search - t.user_attrs["train_seconds"],
                train_steps=steps,
                search_steps=steps * (len(trained) - 1),
                target_ratio=target,
                info={
                    "trial": t.number,
                    "val_error": t.values[0],
                    "trial_flops": t.values[1],
                    "trials_complete": len(trials),
                    "trials_this_process": len(trials) - done,
                    "sampler": cfg.sampler,
                    "study": study.study_name,
                    "trials_trained": len(trained),
                    "final_train_loss": t.user_attrs["final_train_loss"],
                },
            )

        # Per target, the best trial at or under it: what the search offers at that operating point.
        picked: set[int] = set()
        for target in cfg.targets:
            under = [t for t in trained if ratio(t) <= target * (1 + TOLERANCE)]
            if under:
                best = min(under, key=lambda t: (t.values[0], t.values[1], t.number))
                picked.add(best.number)
                yield candidate(best, f"target={target}", target)
        # The rest of the Pareto front, without a target: the search's whole trade-off.
        seen: set[tuple] = set()
        for t in sorted(study.best_trials, key=lambda t: (t.values[1], t.values[0], t.number)):
            key = tuple(t.params[s] for s in slots)
            if "state_dict" not in t.user_attrs or t.number in picked or key in seen:
                continue
            seen.add(key)
            yield candidate(t, ",".join(f"{s}={t.params[s]}" for s in slots), None)
