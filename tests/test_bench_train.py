"""bench/train.py's speed candidates: each runs a real default HAGCN step, diffusion target included."""
from __future__ import annotations

import importlib.util
import os
import subprocess
import sys

import pytest
import torch

import data
from conftest import REPO


def load_bench_train():
    spec = importlib.util.spec_from_file_location("bench_train", REPO / "bench" / "train.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_speed_candidates_time_the_default_step_with_its_diffusion_coordinates(monkeypatch):
    """The default target is the diffusion one, so a candidate's step needs the rows' coordinates (the first GPU run
    of --candidates stopped at 'the diffusion target needs the batch's diffusion coordinates')."""
    monkeypatch.setenv("TQDM_DISABLE", "1")  # what the script sets at import; restored after the test
    bench = load_bench_train()
    # the compiled candidate runs uncompiled here: the same step, without a compile's wait
    monkeypatch.setitem(bench.CANDIDATES, "Adam fused + torch.compile", ({"fused": True}, False, False))
    gen = torch.Generator().manual_seed(0)
    X, y = torch.randn(300, 20, generator=gen), torch.randint(0, 3, (300,), generator=gen)
    coords = torch.randn(300, 8, generator=gen)
    args = bench.project_args(seed=0)
    assert args.sim_target == "diffusion"
    lines = []
    bench.bench_candidates(X, y, coords, 3, args, torch.device("cpu"), 4, [1], lines.append)
    rows = {line.split("  ")[0].strip(): line.split()[-6:] for line in lines[0].splitlines()
            if line.startswith(("plain", "Adam"))}
    assert set(rows) == {"plain loop (Adam defaults)", *bench.CANDIDATES}
    assert all(float(wall) > 0 and float(ratio) > 0 for _, wall, ratio, *_ in rows.values())


@pytest.mark.skipif(not (data.FASHION_MNIST_DIR / "train-images-idx3-ubyte.gz").is_file(),
                    reason="Debian's dataset-fashion-mnist is not installed")
def test_every_section_and_extra_runs_on_a_small_training_part(tmp_path):
    """The whole script at toy sizes (its graph cache in tmp_path): sections 0-3 and the extras, each of which once
    stopped on the default diffusion target when it called the model without the rows' coordinates."""
    run = subprocess.run([sys.executable, str(REPO / "bench" / "train.py"), "--methods", "gcn", "--n_train", "1500",
                          "--steps", "3", "--reps", "1", "--profile_steps", "3", "--ratio_steps", "3",
                          "--ratio_rounds", "1", "--extras"], cwd=tmp_path, capture_output=True, text=True,
                         timeout=600, env={**os.environ, "TQDM_DISABLE": "1"})
    assert run.returncode == 0, run.stderr[-3000:]
    for heading in ("[0] train.train", "[1] seconds per epoch", "[2] one training step", "[3] data loading",
                    "Extras A", "Extras B", "Extras D"):
        assert heading in run.stdout, heading
