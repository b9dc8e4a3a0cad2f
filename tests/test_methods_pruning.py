"""magnitude, structured and l1_channel: pure scoring/stepping helpers, synthetic runs through
the CLI, toy GRU and attention models, torch-pruning's surgery on every task's model, whole
runs on the speech models (smaller, reloaded, scored), bad knobs, front ends pruned through
the FeatureBank protocol, tensors on the model's device."""

import ast
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from conftest import make_task, task_variants
from torch import nn
from torch.nn import functional as F
from torch.utils.data import TensorDataset

from bench.checkpoint import load_candidate
from bench.cli import main
from bench.complexity import flops_at, measure
from bench.config import ConfigError, TrainRecipe
from bench.context import run_context
from bench.planning import plan_runs
from bench.store import ResultStore
from methods.dynamic.layout import consolidate, slot_layout
from methods.l1_channel import L1Channel, L1Importance
from methods.magnitude import Magnitude, MagnitudeConfig
from methods.pruning.scores import feature_scores, lowest, removable, removal_counts, removal_order, slot_costs
from methods.pruning.slot_groups import as_task_model, prune_features, slot_groups
from methods.pruning.stepping import closest_count, step_targets
from methods.pruning.tp_pruners import MagnitudeImportance, RNNPruner, dependency_graph
from methods.structured import Structured, StructuredConfig
from tasks.base import Evaluation, FeatureBank, Task, WidthMask, feature_banks

SMOKE = ["--task", "synthetic", "--scale", "smoke", "--quiet", "--seed", "0", "--threads", "1"]
TARGETS = [0.5, 0.25, 0.125]  # the default FLOP/s targets


pytestmark = pytest.mark.usefixtures("one_thread")


# --- pure helpers ------------------------------------------------------------------------
def test_feature_scores_fold_heads_and_normalise():
    assert feature_scores(torch.tensor([1.0, 3.0])).tolist() == [0.5, 1.5]
    # 2 heads of 3 features: feature j sums channel j of every head
    assert feature_scores(torch.tensor([1.0, 0.0, 2.0, 1.0, 0.0, 2.0]), heads=2).tolist() == [2 / 2, 0.0, 4 / 2]
    assert feature_scores(torch.zeros(3)).tolist() == [0.0, 0.0, 0.0]
    with pytest.raises(ValueError):
        feature_scores(torch.ones(5), heads=2)


def test_slot_costs_average_sorted_scores_of_a_slots_groups():
    costs = slot_costs(
        [("s", torch.tensor([3.0, 1.0])), ("s", torch.tensor([0.0, 4.0])), ("t", torch.tensor([2.0, 0.5, 1.0]))]
    )
    assert costs["s"].tolist() == [0.5, 3.5] and costs["t"].tolist() == [0.5, 1.0, 2.0]
    with pytest.raises(ValueError):
        slot_costs([("s", torch.ones(2)), ("s", torch.ones(3))])


def test_removal_keeps_at_least_one_feature_per_slot():
    costs = {"s": torch.tensor([0.1, 0.5, 2.0]), "t": torch.tensor([0.2, 3.0])}
    order = removal_order(costs)
    assert order[:3] == [("s", 0), ("t", 0), ("s", 1)]
    sizes = {"s": 3, "t": 2}
    assert removable(sizes) == 3
    assert removal_counts(order, sizes, 2) == {"s": 1, "t": 1}
    assert removal_counts(order, sizes, 99) == {"s": 2, "t": 1}
    assert lowest(torch.tensor([0.3, 0.1, 0.1, 2.0]), 2) == [1, 2]


def test_closest_count_bisects_a_monotone_ratio():
    calls = []

    def ratio(k):
        calls.append(k)
        return 1 - k / 100

    assert closest_count(ratio, 0.25, 0, 100) == 75
    assert closest_count(ratio, 0.251, 0, 100) == 75  # nearer than 74
    assert closest_count(ratio, -1.0, 0, 100) == 100  # out of reach: remove all allowed
    assert len(calls) < 40
    assert step_targets(0.25, 2) == pytest.approx([0.5, 0.25])


# --- synthetic task through the CLI ---------------------------------------------------------
def test_structured_meets_flop_targets_and_reloads(store_path):
    args = ["--method", "structured", "--store", store_path, "--set", "train.steps=60", "--set", "method.steps=2"]
    assert main(["run", *SMOKE, *args]) == 0
    rows = sorted(ResultStore(store_path).rows(), key=lambda r: -r["target_ratio"])
    assert [r["target_ratio"] for r in rows] == TARGETS
    dense = rows[0]["info"]["dense_flops"]
    for row in rows:
        assert row["status"] == "ok" and row["target_met"]
        assert abs(row["flops"] / dense / row["target_ratio"] - 1) <= 0.10, row["label"]
        assert row["search_seconds"] > row["train_seconds"] > 0
        model, info = load_candidate(ResultStore(store_path).models_dir / row["model_path"])
        assert info["widths"] == row["widths"] and row["widths"]["hidden"] < 64
        assert measure(model, torch.zeros(1, 16)).flops == row["flops"]
    widths = [r["widths"]["hidden"] for r in rows]
    assert widths == sorted(widths, reverse=True) and widths[0] > widths[-1]


def test_magnitude_nonzero_flops_fall_while_dense_flops_stay(store_path):
    args = ["--method", "magnitude", "--store", store_path, "--set", "train.steps=60", "--set", "method.steps=2"]
    assert main(["run", *SMOKE, *args]) == 0
    store = ResultStore(store_path)
    rows = sorted(store.rows(), key=lambda r: -r["target_ratio"])
    assert {r["flops"] for r in rows} == {2 * (16 * 64 + 64 + 64 * 4)}  # the dense model's FLOPs, unchanged
    nonzero = [r["nonzero_flops"] for r in rows]
    assert nonzero == sorted(nonzero, reverse=True) and len(set(nonzero)) == len(TARGETS)
    for row, target in zip(rows, TARGETS):
        assert row["target_met"] and row["achieved_ratio"] == pytest.approx(row["nonzero_flops"] / row["flops"])
        assert abs(row["nonzero_flops"] / row["flops"] / target - 1) <= 0.10
        assert row["widths"] == {"hidden": 64} and row["nonzero_params"] < row["params"]
    sparsity = [r["info"]["sparsity"] for r in rows]
    assert sparsity == sorted(sparsity) and sparsity[-1] > 0.9
    model, _ = load_candidate(store.models_dir / rows[-1]["model_path"])  # plain module, zeros kept
    assert not any("mask" in k or "orig" in k for k in model.state_dict())
    assert measure(model, torch.zeros(1, 16)).nonzero_flops == rows[-1]["nonzero_flops"]


def test_default_targets_under_a_task_floor_are_left_out_set_ones_are_run(capsys):
    """On the VAD CRNN the front end, norms and gate arithmetic have no weights: zeroing
    every weight leaves ~0.3 of the non-zero FLOP/s, every slot at width 1 ~0.1."""
    task = make_task("vad", {"model": "crnn"})
    magnitude, structured = Magnitude(), Structured()
    assert 0.25 < magnitude.floor(task) < 0.5 and 0.0625 < structured.floor(task) < 0.125
    assert magnitude.knob_values(task) == [0.5]
    assert structured.knob_values(task) == [0.5, 0.25, 0.125]
    assert "[0.25, 0.125] left out on task vad" in capsys.readouterr().err
    zeroed = task.build_model()
    with torch.no_grad():
        for p in zeroed.parameters():
            if p.dim() >= 2:
                p.zero_()
    assert measure(zeroed, task.example_input()).nonzero_flops / measure(
        zeroed, task.example_input()
    ).flops == pytest.approx(magnitude.floor(task), abs=0.01)
    assert Magnitude(MagnitudeConfig(ratios=[0.25])).knob_values(task) == [0.25]  # asked for: run, ends at the floor
    assert Structured(StructuredConfig(ratios=[0.0625])).knob_values(task) == [0.0625]


@pytest.mark.parametrize(
    "setting",
    [
        "structured.ratios=0",
        "structured.ratios=1.5",
        "magnitude.ratios=-0.1",
        "structured.importance=random",
        "magnitude.steps=0",
        "structured.slots=nope",
    ],
)
def test_bad_knobs_are_rejected_before_training(setting, store_path, capsys):
    assert main(["run", *SMOKE, "--method", "magnitude,structured", "--store", store_path, "--set", setting]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and setting.split("=")[0].split(".")[1] in err
    with pytest.raises(ConfigError):
        plan_runs(["synthetic"], ["structured"], [0], "smoke", [setting.replace("magnitude.", "structured.")])


# --- GRU and attention models of the VAD shapes, through their width slots -----------------
class TinyCRNN(nn.Module):
    def __init__(self, conv: int, gru: int):
        super().__init__()
        self.conv = nn.Sequential(
            nn.Conv1d(6, conv, 3, padding=1), nn.BatchNorm1d(conv), nn.ReLU(), WidthMask("conv", dim=1)
        )
        self.gru, self.gru_mask = nn.GRU(conv, gru, batch_first=True), WidthMask("gru")
        self.head = nn.Linear(gru, 1)

    def forward(self, x):  # (batch, 6, frames) -> (batch, frames)
        h, _ = self.gru(self.conv(x).transpose(1, 2))
        return self.head(self.gru_mask(h)).squeeze(-1)


class TinyAttention(nn.Module):
    """Input projection to width d (slot), one SDPA block with `heads` x head_dim (slot), FFN (slot)."""

    def __init__(self, d: int, head_dim: int, ffn: int, heads: int = 2):
        super().__init__()
        self.heads, self.head_dim = heads, head_dim
        self.inp, self.inp_mask = nn.Linear(6, d), WidthMask("d")
        self.q, self.k, self.v = (nn.Linear(d, heads * head_dim) for _ in range(3))
        self.out, self.out_mask = nn.Linear(heads * head_dim, d), WidthMask("d")
        self.ffn = nn.Sequential(nn.Linear(d, ffn), nn.ReLU(), WidthMask("ffn"), nn.Linear(ffn, d), WidthMask("d"))
        self.head = nn.Linear(d, 1)

    def forward(self, x):
        x = self.inp_mask(self.inp(x.transpose(1, 2)))
        split = lambda t: t.unflatten(-1, (self.heads, self.head_dim)).transpose(1, 2)  # noqa: E731
        a = (
            F.scaled_dot_product_attention(split(self.q(x)), split(self.k(x)), split(self.v(x)))
            .transpose(1, 2)
            .flatten(2)
        )
        x = x + self.out_mask(self.out(a))
        return self.head(x + self.ffn(x)).squeeze(-1)


@dataclass(frozen=True)
class ToyConfig:
    family: str = "crnn"  # crnn | attention


class ToyTask(Task):
    """Per-frame regression of a fixed function of a 6-channel sequence (unregistered)."""

    name = "toy"
    Config = ToyConfig
    metric = "mse"

    def __init__(self, family: str):
        super().__init__(ToyConfig(family), "smoke")
        self.family = family
        g = torch.Generator().manual_seed(0)
        x = torch.randn(96, 6, 12, generator=g)
        self.data = (x, torch.tanh(x[:, 0] - x[:, 1] * x[:, 2]).cumsum(-1) / 3)

    def width_slots(self):
        return {"conv": 12, "gru": 10} if self.family == "crnn" else {"d": 16, "head_dim": 6, "ffn": 20}

    def build_model(self, widths=None):
        w = self.resolve_widths(widths)
        return (
            TinyCRNN(w["conv"], w["gru"]) if self.family == "crnn" else TinyAttention(w["d"], w["head_dim"], w["ffn"])
        )

    def recipe(self):
        return TrainRecipe(steps=15, batch_size=16, lr=3e-3)

    def dataset(self, split):
        return TensorDataset(*self.data)

    def loss(self, model, batch):
        return F.mse_loss(model(batch[0]), batch[1])

    @torch.no_grad()
    def evaluate(self, model, split="test"):
        return Evaluation(error=F.mse_loss(model(self.data[0]), self.data[1]).item())

    def example_input(self):
        return torch.zeros(1, 6, 12)


@pytest.mark.parametrize("family", ["crnn", "attention"])
@pytest.mark.parametrize("importance", ["magnitude", "taylor"])
def test_structured_prunes_gru_and_attention_slots(family, importance):
    task = ToyTask(family)
    ctx = run_context(task, 0, task.recipe(), progress=False)
    dense = measure(task.build_model(), task.example_input()).flops
    config = StructuredConfig(ratios=[0.3], importance=importance, steps=2)
    (cand,) = Structured(config).candidates(ctx)
    assert all(cand.widths[s] < n for s, n in task.width_slots().items())  # every slot shrank, GRU and heads included
    flops = measure(cand.model, task.example_input()).flops
    assert abs(flops / dense / 0.3 - 1) <= 0.10
    # The candidate is exactly the task's model at its widths: what load_candidate rebuilds.
    rebuilt = task.build_model(cand.widths)
    rebuilt.load_state_dict(cand.model.state_dict())
    rebuilt.eval()
    assert task.evaluate(rebuilt).error == pytest.approx(task.evaluate(cand.model).error)
    assert task.evaluate(cand.model).error < 10


def test_slot_layout_sees_gru_gates_and_head_groups():
    crnn, attention = slot_layout(ToyTask("crnn")), slot_layout(ToyTask("attention"))
    assert [(d.dim, d.groups) for d in crnn["gru.weight_hh_l0"]] == [(1, 1), (0, 3)] or sorted(
        (d.slot, d.dim, d.groups) for d in crnn["gru.weight_hh_l0"]
    ) == [("gru", 0, 3), ("gru", 1, 1)]
    assert ("head_dim", 0, 2) in [(d.slot, d.dim, d.groups) for d in attention["q.weight"]]
    assert ("head_dim", 1, 2) in [(d.slot, d.dim, d.groups) for d in attention["out.weight"]]


def test_magnitude_prunes_gru_weights_to_plain_zeros():
    task = ToyTask("crnn")
    ctx = run_context(task, 0, task.recipe(), progress=False)
    (cand,) = Magnitude(MagnitudeConfig(ratios=[0.25], steps=2)).candidates(ctx)
    cx = measure(cand.model, task.example_input())
    assert cx.flops == measure(task.build_model(), task.example_input()).flops
    assert abs(cx.nonzero_flops / cx.flops / 0.25 - 1) <= 0.10
    gru = cand.model.gru
    assert (
        isinstance(gru.weight_hh_l0, nn.Parameter) and (gru.weight_hh_l0 == 0).any() and (gru.weight_ih_l0 == 0).any()
    )
    assert torch.isfinite(cand.model(task.example_input())).all()


@pytest.mark.parametrize("cls", [nn.GRU, nn.LSTM, nn.RNN])
def test_rnn_pruner_removes_units_in_every_gate_block(cls):
    """Units whose weights are all zero stay zero in the recurrence, so the pruned RNN must
    give the kept units' outputs of the full one; so must input features with zero columns."""
    torch.manual_seed(0)
    rnn, gone_units, gone_inputs = cls(5, 6, batch_first=True), [1, 4], [0, 3]
    gates = RNNPruner.gates(rnn)
    with torch.no_grad():
        for name, p in rnn.named_parameters():
            rows = [g * 6 + u for g in range(gates) for u in gone_units]
            p[rows] = 0
            if name == "weight_hh_l0":
                p[:, gone_units] = 0
            if name == "weight_ih_l0":
                p[:, gone_inputs] = 0
    x = torch.randn(2, 7, 5)
    full = rnn(x)[0]
    pruner = RNNPruner()
    pruner.prune_out_channels(rnn, gone_units)
    pruner.prune_in_channels(rnn, gone_inputs)
    assert (rnn.hidden_size, rnn.input_size, rnn.weight_ih_l0.shape) == (4, 3, (gates * 4, 3))
    kept = [u for u in range(6) if u not in gone_units]
    small = rnn(x[..., [i for i in range(5) if i not in gone_inputs]])[0]
    assert torch.allclose(small, full[..., kept], atol=1e-6)


# --- the real models: torch-pruning's surgery, then whole runs --------------------------------
VARIANTS = [pytest.param(name, overrides, id=vid) for vid, name, overrides in task_variants()]


@pytest.mark.parametrize("name,overrides", VARIANTS)
def test_torch_pruning_surgery_equals_slot_consolidation(name, overrides):
    """Removing the same features with torch-pruning (custom GRU and log-mel pruners, head
    features of every head) gives exactly the probed slot consolidation, on every model."""
    task = make_task(name, overrides)
    torch.manual_seed(0)
    model = task.build_model().eval()
    for m in model.modules():  # non-trivial norm statistics, so a wrong row would show
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.running_mean.normal_(), m.running_var.uniform_(0.5, 2), m.weight.data.normal_()
    widths, layout = task.resolve_widths(None), slot_layout(task)
    g = torch.Generator().manual_seed(1)
    keep = {s: torch.randperm(n, generator=g)[: max(1, n // 3)].sort().values for s, n in widths.items()}
    expected, expected_widths = consolidate(task, model, keep)
    graph = dependency_graph(model, task.example_input())
    groups = slot_groups(graph, model, layout, widths, list(widths))
    assert {grp.slot for grp in groups} == set(
        widths
    )  # every slot is a torch-pruning group, GRU and mel bands included
    for grp in groups:
        prune_features(graph, grp, sorted(set(range(widths[grp.slot])) - set(keep[grp.slot].tolist())))
    pruned, pruned_widths = as_task_model(task, model, layout)
    assert pruned_widths == expected_widths
    state, ref = pruned.state_dict(), expected.state_dict()
    assert all(torch.equal(state[k], ref[k]) for k in ref)
    x = task.example_input()
    assert torch.equal(pruned(x), expected(x))
    assert measure(pruned, x).flops < measure(task.build_model(), x).flops
    if name == "vad" and overrides["model"] == "crnn":
        assert model.gru.hidden_size == pruned.gru.hidden_size == expected_widths["gru"] < widths["gru"]


@pytest.mark.parametrize(
    "name,family,shrinks,importance",
    [
        ("vad", "crnn", "gru", "magnitude"),
        ("vad", "transformer", "head_dim", "magnitude"),
        ("antispoof", "", "stage4", "taylor"),
    ],
)
def test_structured_on_speech_models_runs_reloads_and_scores(name, family, shrinks, importance, store_path):
    settings = [
        *([f"task.model={family}"] if family else []),
        "train.steps=2",
        "method.ratios=0.25",
        "method.steps=1",
        "method.step_finetune=0",
        f"method.importance={importance}",
    ]
    assert (
        main(
            [
                "run",
                "--task",
                name,
                "--method",
                "structured",
                "--scale",
                "smoke",
                "--quiet",
                "--seed",
                "0",
                "--threads",
                "1",
                "--store",
                store_path,
                *[a for s in settings for a in ("--set", s)],
            ]
        )
        == 0
    )
    store = ResultStore(store_path)
    (row,) = store.rows()
    task = make_task(name, {"model": family} if family else {})
    full = task.width_slots()
    assert row["status"] == "ok" and set(row["widths"]) == set(full)
    assert row["widths"][shrinks] < full[shrinks]
    assert abs(row["flops"] / row["info"]["dense_flops"] / 0.25 - 1) <= 0.10
    assert row["info"]["tp_groups"] and all(row["info"]["tp_groups"].values())
    model, _ = load_candidate(store.models_dir / row["model_path"])
    assert measure(model, task.example_input()).flops == row["flops"]
    assert task.evaluate(model).error == pytest.approx(row["error"])


@pytest.mark.parametrize("name,overrides", [(n, o) for _, n, o in task_variants() if n != "synthetic"])
def test_magnitude_runs_on_every_speech_model(name, overrides, one_thread):
    """The real models, not toys: e.g. the antispoof ResNet keeps its conv weights channels-last,
    which torch.nn.utils.prune cannot flatten."""
    task = make_task(name, overrides)
    ctx = run_context(task, 0, TrainRecipe(steps=2, batch_size=2), progress=False)
    (cand,) = Magnitude(MagnitudeConfig(ratios=[0.5], steps=1)).candidates(ctx)
    cx = measure(cand.model, task.example_input())
    assert abs(cx.nonzero_flops / cx.flops / 0.5 - 1) <= 0.10
    assert torch.isfinite(cand.model(task.example_input())).all()


# --- front ends through the FeatureBank protocol; methods import no task module --------------
class ProjectionBank(FeatureBank):
    """A fixed random projection of the input channels, its features rows of a buffer: a
    front end that is not the log-mel one, known to the pruners only by the protocol."""

    def __init__(self, n: int):
        super().__init__()
        self.register_buffer("rows", torch.randn(n, 6, generator=torch.Generator().manual_seed(3)))

    def forward(self, x):  # (batch, 6, frames) -> (batch, n, frames)
        return torch.matmul(self.rows, x)

    @property
    def out_features(self):
        return self.rows.shape[0]

    def keep_features(self, idxs):
        self.rows = self.rows[list(idxs)].contiguous()


class BankNet(nn.Module):
    def __init__(self, bank: int, conv: int):
        super().__init__()
        self.bank, self.bank_mask = ProjectionBank(bank), WidthMask("bank", dim=1)
        self.norm = nn.BatchNorm1d(bank)
        self.conv = nn.Sequential(nn.Conv1d(bank, conv, 3, padding=1), nn.ReLU(), WidthMask("conv", dim=1))
        self.head = nn.Conv1d(conv, 1, 1)

    def forward(self, x):
        return self.head(self.conv(self.norm(self.bank_mask(self.bank(x))))).squeeze(1)


class BankTask(ToyTask):
    def __init__(self):
        super().__init__("crnn")

    def width_slots(self):
        return {"bank": 16, "conv": 12}

    def build_model(self, widths=None):
        w = self.resolve_widths(widths)
        return BankNet(w["bank"], w["conv"])


def test_structured_prunes_a_feature_bank_through_the_protocol():
    task = BankTask()
    graph = dependency_graph(task.build_model(), task.example_input())
    assert ProjectionBank in graph.CUSTOMIZED_PRUNERS  # found by the protocol, not by its class
    ctx = run_context(task, 0, task.recipe(), progress=False)
    (cand,) = Structured(StructuredConfig(ratios=[0.3], steps=2, slots=["bank"])).candidates(ctx)
    assert cand.widths["bank"] < 16 and cand.widths["conv"] == 12
    bank = cand.model.bank
    assert bank.out_features == cand.widths["bank"] == cand.model.norm.num_features
    assert cand.model.conv[0].in_channels == cand.widths["bank"]
    # the kept rows are rows of the dense bank, in order
    dense_rows = ProjectionBank(16).rows
    kept = [i for i in range(16) if any(torch.equal(dense_rows[i], r) for r in bank.rows)]
    assert len(kept) == bank.out_features and torch.equal(dense_rows[kept], bank.rows)
    assert abs(measure(cand.model, task.example_input()).flops / cand.info["dense_flops"] / 0.3 - 1) <= 0.10


def test_a_feature_bank_spreads_only_if_it_says_how():
    from tasks.speech.frontend import LogMel

    assert LogMel.can_spread() and not ProjectionBank.can_spread()
    model = nn.Sequential(LogMel(8), nn.Identity(), ProjectionBank(4))
    assert feature_banks(model) == [model[0], model[2]] and feature_banks(model, spreadable=True) == [model[0]]
    with pytest.raises(NotImplementedError):
        model[2].spread_features()


def test_methods_import_no_task_module_but_tasks_base():
    """Methods reach tasks only through the shared width core (`tasks.base`): a task's layers
    (front ends, ...) register with methods through its protocols, not the other way round."""
    root = Path(__file__).resolve().parent.parent
    bad = []
    for path in sorted((root / "methods").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [f"{node.module}.{a.name}" if node.module == "tasks" else node.module for a in node.names]
            else:
                continue
            bad += [f"{path.relative_to(root)}: {n}" for n in names if n.split(".")[0] == "tasks" and n != "tasks.base"]
    assert not bad, bad


class RecurrentOnly(nn.Module):
    """A GRU whose outputs reach no Conv, Linear or norm: torch-pruning's importance has nothing to score."""

    def __init__(self):
        super().__init__()
        self.gru = nn.GRU(6, 5, batch_first=True)

    def forward(self, x):
        return self.gru(x.transpose(1, 2))[0].mean(-1)


def test_tp_pruners_make_their_tensors_on_the_models_device():
    """On the meta device (a stand-in for an accelerator) the trace, the importances with the
    GRU's weights added, and the GRU surgery all stay on the model's device."""
    task = ToyTask("crnn")
    model = task.build_model().eval().to("meta")
    graph = dependency_graph(model, task.example_input().to("meta"))
    groups = slot_groups(graph, model, slot_layout(task), task.resolve_widths(), ["conv", "gru"])
    assert {g.slot for g in groups} == {"conv", "gru"}
    for g in groups:
        assert MagnitudeImportance()(g.group).device.type == "meta"
        prune_features(graph, g, [0, 1])
    assert (model.gru.hidden_size, model.gru.input_size) == (8, 10)
    assert {p.device.type for p in model.parameters()} == {"meta"}
    model = RecurrentOnly().to("meta")
    graph = dependency_graph(model, torch.zeros(1, 6, 12, device="meta"))
    group = graph.get_pruning_group(model.gru, graph.CUSTOMIZED_PRUNERS[nn.GRU].prune_out_channels, list(range(5)))
    scores = MagnitudeImportance()(group)
    assert scores.device.type == "meta" and scores.shape == (5,)


# --- l1_channel: structured pruning scored by the group L1 norm -------------------------------
class OneConv(nn.Module):
    def __init__(self, conv: int):
        super().__init__()
        self.conv, self.mask = nn.Conv1d(6, conv, 1, bias=False), WidthMask("conv", dim=1)
        self.head = nn.Conv1d(conv, 1, 1, bias=False)

    def forward(self, x):
        return self.head(self.mask(torch.relu(self.conv(x)))).squeeze(1)


class OneConvTask(ToyTask):
    def __init__(self):
        super().__init__("crnn")

    def width_slots(self):
        return {"conv": 3}

    def build_model(self, widths=None):
        return OneConv(self.resolve_widths(widths)["conv"])


@pytest.mark.parametrize("method, removed", [(L1Channel(), 0), (Structured(), 1)])
def test_l1_channel_removes_the_feature_of_least_group_l1_norm(method, removed):
    """Filter 0 has the smallest L1 norm (1 against 1.8), filter 1 the smallest L2 norm
    (0.54 against 1 squared): L1 scoring drops filter 0, structured's group L2 filter 1."""
    task = OneConvTask()
    ctx = run_context(task, 0, task.recipe(), progress=False)
    model = task.build_model()
    rows = torch.tensor([[1.0, 0, 0, 0, 0, 0], [0.3] * 6, [2.0] * 6])
    with torch.no_grad():
        model.conv.weight.copy_(rows[:, :, None])
        model.head.weight.fill_(0.1)
    model, run = method.prepare(ctx, model)
    two = flops_at(task, {"conv": 2}) / flops_at(task, {})
    pruned, entry = method.prune_step(ctx, model, two, run)
    assert entry["widths"] == {"conv": 2}
    kept = [i for i in range(3) if i != removed]
    assert torch.equal(pruned.conv.weight[:, :, 0], rows[kept])


def test_l1_channel_reaches_flop_targets_on_the_synthetic_task(store_path):
    assert L1Channel.in_all is False and L1Channel().config.steps == 1  # an extra, one-shot by default
    args = ["--method", "l1_channel", "--store", store_path, "--set", "train.steps=60"]
    assert main(["run", *SMOKE, *args]) == 0
    rows = sorted(ResultStore(store_path).rows(), key=lambda r: -r["target_ratio"])
    assert [r["target_ratio"] for r in rows] == TARGETS
    for row in rows:
        assert row["status"] == "ok" and row["target_met"] and row["info"]["importance"] == "l1"
        assert abs(row["flops"] / row["info"]["dense_flops"] / row["target_ratio"] - 1) <= 0.10, row["label"]
        assert row["info"]["budget_split"] == {"pretrain": 30, "step": 6, "final": 30, "total": 60}
        assert len(row["info"]["steps"]) == 1 and row["train_steps"] == 60


def test_l1_importance_adds_every_gate_row_and_recurrent_column_of_a_gru_unit():
    task = ToyTask("crnn")
    model = task.build_model().eval()
    graph = dependency_graph(model, task.example_input())
    (group,) = slot_groups(graph, model, slot_layout(task), task.resolve_widths(), ["gru"])
    gru, h = model.gru, 10
    ih, hh = gru.weight_ih_l0.detach().abs(), gru.weight_hh_l0.detach().abs()
    expected = ih.sum(1).reshape(3, h).sum(0) + hh.sum(1).reshape(3, h).sum(0) + hh.sum(0)
    expected += model.head.weight.detach().abs().sum(0)  # the head's input column of each unit
    assert torch.allclose(L1Importance()(group.group), expected, rtol=1e-5)
