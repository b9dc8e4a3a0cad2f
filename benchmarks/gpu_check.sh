#!/usr/bin/env bash
# The `--device cuda` path on a machine with one CUDA GPU, from a fresh clone (run from
# anywhere: it works in the clone this file is in). About 5-8 minutes on an H200, most of it
# installing torch and the smoke main job. Outputs under ${OUT:-gpu_check_out}:
#   env.txt           torch, CUDA and the GPU
#   run.log           the smoke main job on CUDA; results.txt / results.json: its stored rows
#   width_learners.txt  noise injection and gates trained a few steps on CUDA on every model family
#   step_time.txt     dense VAD CRNN training step, GPU against CPU (ms/step and ratio)
#   pytest.txt        the device tests, with CUDA present
# Exits non-zero if anything failed (the rest still runs; the first failure's step is named).
set -euo pipefail

cd "$(dirname "$0")/.."
OUT_DIR=${OUT:-gpu_check_out}
mkdir -p "$OUT_DIR"
OUT_DIR=$(cd "$OUT_DIR" && pwd)
PYTHON=${PYTHON:-python3}
VENV=${VENV:-.venv-gpu}
failed=""
note_failure() { failed="${failed:+$failed, }$1"; echo "FAILED: $1" >&2; }

# (a) A venv with the CUDA build of torch. Not `-c constraints.txt`: it pins torch==2.13.0 to
# the CPU wheel. Its other pin is still needed: pyworld (the anti-spoofing attacks) imports
# pkg_resources, which setuptools 81 removed.
if [ ! -x "$VENV/bin/python" ]; then
    "$PYTHON" -m venv "$VENV"
fi
PY="$VENV/bin/python"
"$PY" -m pip install -q --upgrade pip
"$PY" -m pip install -q -e '.[test]' 'setuptools<81' 2>&1 | tee "$OUT_DIR/pip.log"
"$PY" - <<'EOF' 2>&1 | tee "$OUT_DIR/env.txt"
import torch

assert torch.cuda.is_available(), f"torch {torch.__version__} (CUDA {torch.version.cuda}) sees no GPU"
print(f"torch {torch.__version__}, CUDA {torch.version.cuda}, {torch.cuda.get_device_name(0)}")
EOF

# (b) The smoke main job on CUDA, into a store of its own; fail if any run or row failed.
RESULTS=$(mktemp -d)
STORE="$RESULTS/results.db"
if ! "$PY" -m bench run --method all --scale smoke --device cuda --store "$STORE" --quiet 2>&1 | tee "$OUT_DIR/run.log"; then
    note_failure "bench run (see run.log)"
fi
"$PY" -m bench results --store "$STORE" 2>&1 | tee "$OUT_DIR/results.txt" || note_failure "bench results"
"$PY" -m bench results --store "$STORE" --format json >"$OUT_DIR/results.json" || note_failure "bench results json"
"$PY" - "$OUT_DIR/results.json" <<'EOF' || note_failure "stored rows"
import json
import sys

rows = json.load(open(sys.argv[1]))
bad = [f"{r['task']}/{r['method']} seed {r['seed']}: {r.get('reason') or r['status']}" for r in rows if r["status"] != "ok"]
print(f"{len(rows)} rows, {len(bad)} not ok")
sys.exit(1 if bad or not rows else 0)
EOF

# (c) The width learners on CUDA on both VAD families (the main job leaves VAD out) and the
# anti-spoofing ResNet: a few steps each, through `candidates` (bind, train on
# the run's device, consolidate).
"$PY" - <<'EOF' 2>&1 | tee "$OUT_DIR/width_learners.txt" || note_failure "width learners on CUDA"
import dataclasses

import torch

from bench.config import TrainRecipe
from bench.registry import get_method_class, get_task_class
from bench.context import run_context

for name, overrides in [("vad", {"model": "crnn"}), ("vad", {"model": "transformer"}), ("antispoof", {})]:
    cls = get_task_class(name)
    task = cls(dataclasses.replace(cls.Config(), **overrides), scale="smoke")
    for method_name in ("noise_injection", "stochastic_gates"):
        method_cls = get_method_class(method_name)
        method = method_cls(method_cls.Config(target=[0.5]))
        recipe = dataclasses.replace(task.recipe(), steps=10)
        ctx = run_context(task, 0, recipe, progress=False, device=torch.device("cuda"))
        candidate = next(method.candidates(ctx))
        error = task.evaluate(candidate.model.to("cuda")).error
        print(f"{name} {overrides}: {method_name} widths {candidate.widths}, error {error:.3g}")
EOF

# (d) Dense VAD CRNN training step (the task's smoke recipe, bench.training.train): 5 warm-up
# steps, then 30 timed, synchronised. The CPU at one thread, as `bench run --threads 1` runs.
"$PY" - <<'EOF' 2>&1 | tee "$OUT_DIR/step_time.txt" || note_failure "step time"
import dataclasses
import time

import torch

from bench.registry import get_task_class
from bench.training import train

cls = get_task_class("vad")
task = cls(dataclasses.replace(cls.Config(), model="crnn"), scale="smoke")
recipe = task.recipe()
WARM, TIMED = 5, 30
torch.set_num_threads(1)
ms = {}
for device in (torch.device("cuda"), torch.device("cpu")):
    model = task.build_model()
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    train(task, model, 0, dataclasses.replace(recipe, steps=WARM), progress=False, device=device)
    sync()
    start = time.perf_counter()
    train(task, model, 0, dataclasses.replace(recipe, steps=TIMED), progress=False, device=device)
    sync()
    ms[device.type] = 1e3 * (time.perf_counter() - start) / TIMED
for device, value in ms.items():
    print(f"vad crnn dense, batch {recipe.batch_size}, {device}: {value:.2f} ms/step, cpu/{device} {ms['cpu'] / value:.2f}x")
EOF

# (e) The device tests, now with CUDA present (the no-CUDA error test skips itself).
"$PY" -m pytest -q tests/test_device.py tests/test_device_safety.py 2>&1 | tee "$OUT_DIR/pytest.txt" || note_failure "pytest"

rm -rf "$RESULTS"
if [ -n "$failed" ]; then
    echo "gpu_check: failed: $failed" >&2
    exit 1
fi
echo "gpu_check: all passed; outputs in $OUT_DIR"
