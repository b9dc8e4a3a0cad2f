"""Device safety of the width learners and the model code, checked on a CPU-only machine.

The rule: tensors follow the model, its inputs or `RunContext.device`; nothing inside a
forward pass, a width transform, a mask or the FLOP cost is created on the CPU by default.
Without a GPU, the `meta` device stands in for one: a meta tensor meeting a CPU tensor
(other than a 0-dim one, which CUDA accepts too) raises "Tensor on device cpu is not on the
expected device meta", just as CUDA would. The front ends (stft, log-mel, LFCC, low band),
the models, the losses and the backward pass all run on meta. What meta cannot do is give a
value (`.item()`): the loop's loss check, `after_step`'s width trajectory and consolidation
read values, so the test does one step in the loop's order by hand (`_MetaRun.train`) and
stops before consolidation. Those parts run on the CPU in tests/test_contract.py and on CUDA
in benchmarks/gpu_check.sh. (Noise injection reads kappa on the host to choose how many
features pass, `kappa_value`; on meta the value read before the move stands.)
"""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from bench import registry
from bench.cli import build_parser
from bench.config import TrainRecipe
from bench.device import to_device
from bench.training import _loader
from methods.base import RunContext
from methods.dynamic.flops_model import FlopsModel
from tests.conftest import make_task

ROOT = Path(__file__).resolve().parents[1]
META = torch.device("meta")
WIDTH_METHODS = ["noise_injection", "stochastic_gates"]
# The smallest configs the other tests use (smoke scale); each model family and front end.
TASKS = {
    "synthetic": ("synthetic", {}),
    "vad-crnn": ("vad", {"model": "crnn"}),
    "vad-transformer": ("vad", {"model": "transformer"}),
    "antispoof-resnet-lfcc": ("antispoof", {}),
    "antispoof-resnet-lowband": ("antispoof", {"front_end": "lowband"}),
}


class _Checked(Exception):
    """Ends `candidates` after the checked pass: consolidation reads the learned widths'
    values, and meta tensors have none."""


@dataclass
class _MetaRun(RunContext):
    """A run on the meta device whose `train` does one step of `bench.training.train` in its
    order (move the model, ask the hooks for the parameter groups, task loss + extra loss,
    backward): the real loop cannot run on meta, as it reads the loss's value."""

    def train(self, model, hooks=None, recipe=None, desc="train"):
        model.to(self.device)
        groups = hooks.parameters(model)
        batch = next(iter(_loader(self.task.dataset("train"), 2, torch.Generator().manual_seed(0))))
        model.train()
        loss = self.task.loss(model, to_device(batch, self.device))
        extra = hooks.extra_loss(model, 0)
        (loss + extra).backward()
        raise _Checked(model, hooks, groups, loss, extra)


@pytest.mark.parametrize("method_name", WIDTH_METHODS)
@pytest.mark.parametrize("case", list(TASKS))
def test_training_pass_and_cost_stay_on_the_models_device(case, method_name, one_thread):
    name, overrides = TASKS[case]
    task = make_task(name, overrides)
    cls = registry.get_method_class(method_name)
    # Noise injection starts at kappa 0.6, so every slot has a boundary inside it: at full width
    # (its default start) the masks pass the features through and nothing device-related runs.
    method = cls(cls.Config(kappa_init=0.6, target=[0.5]) if method_name == "noise_injection" else cls.Config())
    ctx = _MetaRun(task=task, seed=0, recipe=TrainRecipe(steps=8, batch_size=2), progress=False, device=META, knob=0.5)
    with pytest.raises(_Checked) as checked:
        next(method.candidates(ctx))  # binds the controller and calls ctx.train, as a run does
    model, controller, groups, loss, extra = checked.value.args
    assert loss.device == META and extra.device == META and extra.dtype == torch.float32
    assert all(p.device == META for p in model.parameters())
    assert all(p.device == META for group in groups for p in group["params"])
    width_params = controller.width_parameters()
    assert width_params and all(p.grad is not None and p.grad.device == META for p in width_params)


# --- no hard-coded host transfers ----------------------------------------------------------------
# Only results leaving the device for numpy code may call .cpu(); each entry: (file, the line's
# code, why). methods/pruning, magnitude.py and structured.py are checked too.
ALLOWED_HOST_CALLS = {
    (
        "tasks/speech/datasets.py",
        "outs.append(model(wave).double().cpu().numpy())",
    ): "evaluation: the model's outputs go to numpy for the metrics",
    (
        "methods/webrtcvad_reference.py",
        "x = (wave.detach().clamp(-1, 1) * 32767).round().to(torch.int16).cpu().numpy()",
    ): "WebRTC VAD is a C library that reads int16 samples from host memory",
    (
        "tasks/speech/frontend.py",
        "w = window.detach().cpu().numpy().astype(np.float64)",
    ): "ONNX export only: the window becomes numpy constants the exporter stores as weights",
}
HOST_CALL = re.compile(r"\.(cpu|cuda)\(|\.to\(\s*[\"'](cpu|cuda)|device\s*=\s*[\"'](cpu|cuda)|torch\.device\([\"']cpu")


def _scanned_files() -> list[Path]:
    return sorted([*ROOT.joinpath("methods").rglob("*.py"), *ROOT.joinpath("tasks").rglob("*.py")])


def test_no_hard_coded_cpu_or_cuda_calls_outside_the_allow_list():
    found = set()
    for path in _scanned_files():
        for line in path.read_text().splitlines():
            code = line.split("#", 1)[0].strip()
            if HOST_CALL.search(code):
                found.add((str(path.relative_to(ROOT)), code))
    unexpected = found - set(ALLOWED_HOST_CALLS)
    assert not unexpected, f"device hard-coded (take it from the model or inputs): {sorted(unexpected)}"
    stale = set(ALLOWED_HOST_CALLS) - found
    assert not stale, f"allow-list entries that no longer match a line: {sorted(stale)}"


# Tensor factories in the width learners take a device, except where the value is made once at
# construction, before anything knows the run's device; each entry: (file, the call, why).
WIDTH_LEARNERS = ["methods/dynamic", "methods/noise_injection.py", "methods/stochastic_gates.py"]
ALLOWED_FACTORIES = {
    ("methods/noise_injection.py", "torch.tensor(start[g])"): "the kappas, made with the controller; "
    "`WidthController.to` moves them with the run's device",
    ("methods/stochastic_gates.py", "torch.full((self.full[s],), config.mu_init)"): "the gate means, "
    "made with the controller and moved as the kappas are",
    ("methods/dynamic/flops_model.py", "torch.tensor(0.0, dtype=torch.float64)"): "the fit's constant: "
    "`FlopsModel._on` copies the fit to the widths' device and dtype",
    ("methods/dynamic/flops_model.py", "torch.zeros(n, dtype=torch.float64)"): "the fit's linear terms (as above)",
    ("methods/dynamic/flops_model.py", "torch.zeros(n, n, dtype=torch.float64)"): "the fit's quadratic terms",
}
FACTORY = re.compile(r"torch\.(arange|zeros|ones|full|empty|tensor|eye|linspace|rand|randn|randint|randperm)\(")


def test_tensor_factories_in_the_width_learners_name_a_device():
    found = set()
    for entry in WIDTH_LEARNERS:
        path = ROOT / entry
        for file in sorted(path.rglob("*.py")) if path.is_dir() else [path]:
            for line in file.read_text().splitlines():
                code = line.split("#", 1)[0]
                for match in FACTORY.finditer(code):
                    call = code[match.start() :]
                    if "device=" not in call:
                        found.add((str(file.relative_to(ROOT)), call))
    unexplained = {
        (f, call) for f, call in found if not any(f == af and call.startswith(ac) for af, ac in ALLOWED_FACTORIES)
    }
    assert not unexplained, f"tensors made on the CPU by default (pass device=): {sorted(unexplained)}"


# --- the FLOP model on the widths' device and dtype ----------------------------------------------
def _reference(flops: FlopsModel, widths: dict[str, float]) -> float:
    """The FLOP model as it was: float64 coefficients and widths on the CPU."""
    w = torch.tensor([float(widths[s]) for s in flops.slots], dtype=torch.float64)
    return float(flops.constant + flops.linear @ w + w @ flops.quadratic @ w)


@pytest.mark.parametrize("case", ["synthetic", "vad-crnn", "vad-transformer", "antispoof-resnet-lfcc"])
def test_flops_model_on_the_widths_device_matches_the_cpu_fit(case, one_thread):
    name, overrides = TASKS[case]
    task = make_task(name, overrides)
    slots = list(task.width_slots())
    flops = FlopsModel.for_task(task, slots)
    generator = torch.Generator().manual_seed(0)
    for _ in range(5):
        fractions = torch.rand(len(slots), generator=generator) * 0.95 + 0.05
        widths = {s: float(f) * flops.full[s] for s, f in zip(slots, fractions)}
        expected = _reference(flops, widths)
        kappas = {s: torch.tensor(widths[s] / flops.full[s], requires_grad=True) for s in slots}
        got = flops({s: kappas[s] * flops.full[s] for s in slots})
        assert got.dtype == torch.float32
        assert abs(float(got.detach()) - expected) <= 1e-5 * expected
        plain = flops(widths)  # Python numbers: float64 on the CPU, as before
        assert abs(float(plain) - expected) <= 1e-6 * expected
        got.backward()
        assert all(k.grad is not None and torch.isfinite(k.grad) for k in kappas.values())
    on_meta = flops.ratio({s: torch.tensor(0.5, device=META) * flops.full[s] for s in slots})
    assert on_meta.device == META and on_meta.dtype == torch.float32


# --- the prepared GPU check ------------------------------------------------------------------------
SCRIPT = ROOT / "benchmarks" / "gpu_check.sh"


def test_gpu_check_script_parses():
    assert SCRIPT.stat().st_mode & 0o111, "benchmarks/gpu_check.sh must be executable"
    subprocess.run(["bash", "-n", str(SCRIPT)], check=True)
    assert "set -euo pipefail" in SCRIPT.read_text()


def _bench_commands(text: str) -> list[list[str]]:
    """Each `-m bench SUBCOMMAND ...` in the script (continuations joined), up to the first
    shell operator or redirection (`2>&1 | tee ...`)."""
    out = []
    for line in text.replace("\\\n", " ").splitlines():
        if line.lstrip().startswith("#") or "-m bench " not in line:
            continue
        lexer = shlex.shlex(line.split("-m bench ", 1)[1], posix=True, punctuation_chars=True)
        lexer.whitespace_split = True
        words: list[str] = []
        for token in lexer:
            if set(token) <= set("|&;<>()"):
                if words and words[-1].isdigit():
                    words.pop()  # the descriptor of a redirection, as in 2>&1
                break
            words.append(token)
        out.append(words)
    return out


def test_gpu_check_script_uses_options_bench_has():
    commands = _bench_commands(SCRIPT.read_text())
    assert {c[0] for c in commands} >= {"run", "results"}
    for command in commands:
        sub, words = command[0], command[1:]
        helptext = subprocess.run(
            [sys.executable, "-m", "bench", sub, "--help"], cwd=ROOT, capture_output=True, text=True, check=True
        ).stdout
        known = set(re.findall(r"(--[a-z][a-z-]*)", helptext))
        used = {w.split("=", 1)[0] for w in words if w.startswith("--")}
        assert used <= known, f"bench {sub}: options {sorted(used - known)} do not exist"
        build_parser().parse_args(command)  # and their values (choices, types): exits on an error
    run = next(c for c in commands if c[0] == "run")
    assert ["--device", "cuda"] == run[run.index("--device") : run.index("--device") + 2]
    assert "smoke" in run and "all" in run
