"""magnitude and structured: pure scoring/stepping helpers, synthetic runs through the CLI,
GRU and attention models pruned through their width slots, the real VAD models, bad knobs."""
from dataclasses import dataclass

import pytest
import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.data import TensorDataset

from bench.checkpoint import load_candidate
from bench.cli import main
from bench.complexity import measure
from bench.config import ConfigError, TrainRecipe
from bench.runner import plan_runs
from bench.store import ResultStore
from methods.base import RunContext
from methods.dynamic.layout import slot_layout
from methods.magnitude import Magnitude, MagnitudeConfig
from methods.pruning.scores import elementwise_scores, feature_sums, keep_after_removing, removable, removal_order, slot_scores
from methods.pruning.stepping import closest_count, step_targets
from methods.structured import Structured, StructuredConfig
from tasks.base import Evaluation, Task, WidthMask

SMOKE = ["--task", "synthetic", "--scale", "smoke", "--quiet", "--seed", "0", "--threads", "1"]
TARGETS = [0.5, 0.25, 0.125, 0.0625]


pytestmark = pytest.mark.usefixtures("one_thread")


# --- pure helpers ------------------------------------------------------------------------
def test_feature_sums_follow_contiguous_groups():
    w = torch.arange(12.0).reshape(6, 2)  # 3 gate groups of 2 features, 2 inputs
    assert feature_sums(w, 0, 3).tolist() == [0 + 1 + 4 + 5 + 8 + 9, 2 + 3 + 6 + 7 + 10 + 11]
    assert feature_sums(w, 1, 1).tolist() == [30.0, 36.0]
    with pytest.raises(ValueError):
        feature_sums(w, 0, 4)


def test_slot_scores_sum_over_tensors_and_normalise_per_slot():
    @dataclass
    class D:
        dim: int
        slot: str
        groups: int

    layout = {"a": [D(0, "s", 1)], "b": [D(1, "s", 1), D(0, "t", 2)]}
    entries = {"a": torch.tensor([[1.0], [3.0]]), "b": torch.tensor([[1.0, 0.0], [0.0, 0.0], [1.0, 2.0], [0.0, 0.0]])}
    scores = slot_scores(entries, layout, ["s", "t"])
    assert torch.allclose(scores["s"].float(), torch.tensor([3.0, 5.0]) / 4)  # a rows + b columns
    assert torch.allclose(scores["t"].float(), torch.tensor([4.0, 0.0]) / 2)  # b rows, 2 groups of 2
    taylor = elementwise_scores({"a": torch.tensor([2.0, -1.0])}, "taylor", {"a": torch.tensor([1.0, 3.0])})
    assert taylor["a"].tolist() == [2.0, 3.0]
    with pytest.raises(ValueError):
        elementwise_scores({}, "random")


def test_removal_keeps_order_and_at_least_one_feature_per_slot():
    scores = {"s": torch.tensor([0.5, 0.1, 2.0]), "t": torch.tensor([0.2, 3.0])}
    order = removal_order(scores)
    assert order[:3] == [("s", 1), ("t", 0), ("s", 0)]
    sizes = {"s": 3, "t": 2}
    assert removable(sizes) == 3
    keep = keep_after_removing(order, sizes, 2)
    assert keep["s"].tolist() == [0, 2] and keep["t"].tolist() == [1]
    everything = keep_after_removing(order, sizes, 99)
    assert everything["s"].tolist() == [2] and everything["t"].tolist() == [1]


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
    rows = sorted(ResultStore(store_path).rows(), key=lambda r: -r["info"]["target_ratio"])
    assert [r["info"]["target_ratio"] for r in rows] == TARGETS
    dense = rows[0]["info"]["dense_flops"]
    for row in rows:
        assert row["status"] == "ok"
        assert abs(row["flops"] / dense / row["info"]["target_ratio"] - 1) <= 0.10, row["label"]
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
    rows = sorted(store.rows(), key=lambda r: -r["info"]["target_ratio"])
    assert {r["flops"] for r in rows} == {2 * (16 * 64 + 64 + 64 * 4)}  # the dense model's FLOPs, unchanged
    nonzero = [r["nonzero_flops"] for r in rows]
    assert nonzero == sorted(nonzero, reverse=True) and len(set(nonzero)) == 4
    for row, target in zip(rows, TARGETS):
        assert abs(row["nonzero_flops"] / row["flops"] / target - 1) <= 0.10
        assert row["widths"] == {"hidden": 64} and row["nonzero_params"] < row["params"]
    sparsity = [r["info"]["sparsity"] for r in rows]
    assert sparsity == sorted(sparsity) and sparsity[-1] > 0.9
    model, _ = load_candidate(store.models_dir / rows[-1]["model_path"])  # plain module, zeros kept
    assert not any("mask" in k or "orig" in k for k in model.state_dict())
    assert measure(model, torch.zeros(1, 16)).nonzero_flops == rows[-1]["nonzero_flops"]


@pytest.mark.parametrize("setting", ["structured.ratios=0", "structured.ratios=1.5", "magnitude.ratios=-0.1",
                                     "structured.importance=random", "magnitude.steps=0", "structured.slots=nope"])
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
        self.conv = nn.Sequential(nn.Conv1d(6, conv, 3, padding=1), nn.BatchNorm1d(conv), nn.ReLU(), WidthMask("conv", dim=1))
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
        a = F.scaled_dot_product_attention(split(self.q(x)), split(self.k(x)), split(self.v(x))).transpose(1, 2).flatten(2)
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
        return TinyCRNN(w["conv"], w["gru"]) if self.family == "crnn" else TinyAttention(w["d"], w["head_dim"], w["ffn"])

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
    ctx = RunContext(task=task, seed=0, recipe=task.recipe(), progress=False)
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
    assert [(d.dim, d.groups) for d in crnn["gru.weight_hh_l0"]] == [(1, 1), (0, 3)] or \
        sorted((d.slot, d.dim, d.groups) for d in crnn["gru.weight_hh_l0"]) == [("gru", 0, 3), ("gru", 1, 1)]
    assert ("head_dim", 0, 2) in [(d.slot, d.dim, d.groups) for d in attention["q.weight"]]
    assert ("head_dim", 1, 2) in [(d.slot, d.dim, d.groups) for d in attention["out.weight"]]


def test_magnitude_prunes_gru_weights_to_plain_zeros():
    task = ToyTask("crnn")
    ctx = RunContext(task=task, seed=0, recipe=task.recipe(), progress=False)
    (cand,) = Magnitude(MagnitudeConfig(ratios=[0.25], steps=2)).candidates(ctx)
    cx = measure(cand.model, task.example_input())
    assert cx.flops == measure(task.build_model(), task.example_input()).flops
    assert abs(cx.nonzero_flops / cx.flops / 0.25 - 1) <= 0.10
    gru = cand.model.gru
    assert isinstance(gru.weight_hh_l0, nn.Parameter) and (gru.weight_hh_l0 == 0).any() and (gru.weight_ih_l0 == 0).any()
    assert torch.isfinite(cand.model(task.example_input())).all()


# --- the real VAD models ------------------------------------------------------------------
@pytest.mark.parametrize("family", ["crnn", "transformer"])
def test_structured_on_vad_models_runs_reloads_and_scores(family, store_path):
    settings = [f"task.model={family}", "train.steps=2", "method.ratios=0.25", "method.steps=1", "method.step_finetune=0"]
    assert main(["run", "--task", "vad", "--method", "structured", "--scale", "smoke", "--quiet", "--seed", "0", "--threads", "1",
                 "--store", store_path, *[a for s in settings for a in ("--set", s)]]) == 0
    store = ResultStore(store_path)
    (row,) = store.rows()
    full = {"crnn": ["n_mels", "conv1", "conv2", "gru", "head"], "transformer": ["n_mels", "head_dim", "ffn"]}[family]
    assert row["status"] == "ok" and set(row["widths"]) == set(full)
    assert row["widths"]["gru" if family == "crnn" else "head_dim"] < (64 if family == "crnn" else 20)
    assert abs(row["info"]["achieved_ratio"] / 0.25 - 1) <= 0.10
    model, _ = load_candidate(store.models_dir / row["model_path"])
    from tasks.vad import VadConfig, VadTask

    task = VadTask(VadConfig(model=family), scale="smoke")
    assert measure(model, task.example_input()).flops == row["flops"]
    assert task.evaluate(model).error == pytest.approx(row["error"])
