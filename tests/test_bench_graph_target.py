"""bench/graph_target.py: each configuration trains HAGCN with its flags, as main.py would."""
from __future__ import annotations

import sys
from types import SimpleNamespace

import numpy as np
import torch

import main
from conftest import REPO

sys.path.append(str(REPO / "bench"))  # after the repository: bench/search.py must not shadow search.py

from graph_target import trained_hagcn  # noqa: E402


def test_a_configurations_training_flags_reach_train(monkeypatch, tmp_path):
    calls = []
    monkeypatch.setattr(main, "train", lambda *a, **kw: calls.append(kw) or 0.0)
    rng = np.random.default_rng(0)
    X = rng.normal(size=(120, 6)).astype(np.float32)
    y = rng.integers(0, 3, 120)
    split = SimpleNamespace(train=np.arange(100))
    model = trained_hagcn("--precision bf16 --lr 3e-3 --batch_group 4 --diffusion_dims 4 --neighbour_pool 8", 8, 2,
                          X, y, split, tmp_path)
    assert model.codes(torch.from_numpy(X[:3])).shape == (3, 8)
    (kw,) = calls
    assert (kw["precision"], kw["lr"], kw["group"], kw["num_epochs"]) == ("bf16", 3e-3, 4, 2)
    assert kw["neighbours"].shape == (100, 8) and kw["coords"].shape == (100, 4)
