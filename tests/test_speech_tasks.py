"""The vad and antispoof tasks end to end at scale smoke: CLI runs store EER with its
breakdowns, evaluation is wired to the right labels, the webrtcvad reference row."""

import numpy as np
import pytest
import torch
from torch import nn

from bench.checkpoint import load_candidate
from bench.cli import main
from bench.store import ResultStore
from tasks.antispoof import AntispoofTask, SpoofPairs
from tasks.vad import SNR_BINS, VadConfig, VadTask


@pytest.fixture(scope="module")
def shared_cache(tmp_path_factory):
    threads = torch.get_num_threads()  # runs below use --threads 1 (steady on a busy machine)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("BENCH_CACHE", str(tmp_path_factory.mktemp("cache")))
        yield
    torch.set_num_threads(threads)


class Oracle(nn.Module):
    """Returns the given per-item targets in order, batch after batch (the evaluation order)."""

    def __init__(self, targets: np.ndarray, sign: float = 1.0):
        super().__init__()
        self.targets, self.sign, self.seen = torch.from_numpy(targets.astype(np.float32)), sign, 0

    def forward(self, wave):
        out = self.targets[self.seen : self.seen + len(wave)]
        self.seen += len(wave)
        return self.sign * out


def test_vad_evaluation_scores_each_frame_against_its_label(shared_cache):
    task = VadTask(scale="smoke")
    labels = task.data("test")["labels"]
    perfect = task.evaluate(Oracle(labels))
    assert perfect.error == 0.0 and perfect.secondary["auc"] == 1.0
    assert set(perfect.breakdowns) <= set(SNR_BINS) and all(v == 0.0 for v in perfect.breakdowns.values())
    assert task.evaluate(Oracle(labels, -1.0)).error == 100.0
    # the smoke test set covers at least three of the four SNR ranges
    assert len(perfect.breakdowns) >= 3


def test_antispoof_evaluation_groups_seen_unseen_and_each_attack(shared_cache):
    task = AntispoofTask(scale="smoke")
    d = task.data("test")
    bona = (d["attack"] < 0).astype(np.float32)
    result = task.evaluate(Oracle(bona))
    expected = {"seen", "unseen"} | {f"attack_{a}" for a in task.config.seen_attacks + task.config.unseen_attacks}
    assert set(result.breakdowns) == expected and result.error == 0.0
    # a model that catches the seen attacks and calls the unseen ones more bona fide than
    # bona fide: seen EER 0, unseen EER 100 (ties would give 50)
    n_seen = len(task.config.seen_attacks)
    seen_only = np.select([d["attack"] < 0, d["attack"] < n_seen], [1.0, 0.0], 2.0)
    result = task.evaluate(Oracle(seen_only))
    assert result.breakdowns["seen"] == 0.0 and result.breakdowns["unseen"] == 100.0
    assert result.breakdowns["attack_mlsa"] == 100.0 and result.breakdowns["attack_lpc"] == 0.0


def test_antispoof_training_pairs_each_spoof_with_the_bona_fide_clip_it_was_made_from(shared_cache):
    task = AntispoofTask(scale="smoke")
    d = task.data("train")
    pairs = task.dataset("train")
    assert len(pairs) == (d["attack"] >= 0).sum()
    for spoof, bona in pairs.pairs.tolist():
        assert d["attack"][spoof] >= 0 and d["attack"][bona] < 0 and d["utterance"][spoof] == d["utterance"][bona]
    waves, targets = pairs[[0, 2, 1]]  # the training loop indexes once per batch
    assert waves.shape == (3, 2, d["audio"].shape[1]) and targets.tolist() == [[0.0, 1.0]] * 3
    assert torch.equal(waves[1, 1], pairs[2][0][1])
    loss = task.loss(task.build_model(), (waves, targets))
    assert loss.shape == () and torch.isfinite(loss)
    # no shared utterances (ASVspoof): the bona fide clips in turn, classes balanced
    other = SpoofPairs(np.zeros((6, 4), np.int16), np.array([-1, 0, 1, -1, 2, 0]), np.arange(6))
    assert other.pairs.tolist() == [[1, 0], [2, 3], [4, 0], [5, 3]]


@pytest.mark.parametrize(
    "task,settings",
    [
        ("vad", ["--set", "task.model=crnn"]),
        ("vad", ["--set", "task.model=transformer"]),
        ("antispoof", []),
    ],
)
def test_cli_smoke_run_stores_eer_breakdowns_and_a_reloadable_model(task, settings, tmp_path, shared_cache):
    store = str(tmp_path / "r.db")
    assert (
        main(
            [
                "run",
                "--task",
                task,
                "--method",
                "baseline",
                "--scale",
                "smoke",
                "--seed",
                "0",
                "--store",
                store,
                "--threads",
                "1",
                "--quiet",
                *settings,
            ]
        )
        == 0
    )
    row, check = ResultStore(store).rows(task=task)  # the dense model, and its convergence check at 2x the budget
    assert check["info"]["convergence_check"] and check["train_steps"] == 2 * row["train_steps"]
    assert row["status"] == "ok" and row["metric"] == "eer" and 0 <= row["error"] <= 100
    assert row["flops_unit"].startswith("FLOP/s") and row["flops"] > 1e6 and row["uncounted_ops"] == []
    if task == "vad":
        assert set(row["breakdowns"]) <= set(SNR_BINS) and 0 <= row["secondary"]["auc"] <= 1
    else:
        assert {"seen", "unseen", "attack_world"} <= set(row["breakdowns"])
    model, _ = load_candidate(tmp_path / "r-models" / row["model_path"])  # buffers (mel filters) travel too
    config = {k: v for k, v in row["task_config"].items() if k != "name"}
    again = VadTask(VadConfig(**config), scale="smoke") if task == "vad" else AntispoofTask(scale="smoke")
    assert again.evaluate(model).error == pytest.approx(row["error"])


def test_webrtcvad_reference_row_is_marked_and_applies_only_to_vad(tmp_path, shared_cache):
    store = str(tmp_path / "r.db")
    assert (
        main(
            [
                "run",
                "--task",
                "vad",
                "--method",
                "webrtcvad",
                "--scale",
                "smoke",
                "--seed",
                "0",
                "--store",
                store,
                "--quiet",
            ]
        )
        == 0
    )
    rows = ResultStore(store).rows(task="vad")  # one per seed: the reference uses none of the model families
    assert len(rows) == 1 and rows[0]["model_path"] is None
    for row in rows:
        assert row["info"]["reference"] is True and row["uncounted_ops"] == ["smallspeech::webrtcvad"]
        assert row["flops"] == 0 and row["params"] == 0 and 0 < row["error"] < 100
    assert main(["run", "--task", "antispoof", "--method", "webrtcvad", "--scale", "smoke", "--store", store]) == 2
    from methods.webrtcvad_reference import WebRTCReference

    assert WebRTCReference().applies_to(VadTask(scale="smoke"))
    assert not WebRTCReference().applies_to(AntispoofTask(scale="smoke"))  # so --method all leaves it out
