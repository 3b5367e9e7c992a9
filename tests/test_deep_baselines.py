"""Deep baselines (Bi-half, DSH, HashNet, SHC): they learn on real data (scikit-learn's digits), SHC's centers keep
their minimum Hamming distance, Bi-half balances every bit in training, codes are inductive, losses stay finite."""
from __future__ import annotations

import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import baselines  # noqa: E402
import data  # noqa: E402
from losses import total  # noqa: E402
from model import BiHalf, HashNet, min_hamming  # noqa: E402
from train import encode, train  # noqa: E402

BITS = 32
ARGS = SimpleNamespace(hidden=256, seed=0)


def map_at_k(q_codes: np.ndarray, db_codes: np.ndarray, q_y: np.ndarray, db_y: np.ndarray, k: int) -> float:
    """mAP@k with label-equality relevance, Hamming ranking with ties to the lower database index."""
    ham = (q_codes[:, None, :] != db_codes[None, :, :]).sum(-1)
    order = np.argsort(ham, axis=1, kind="stable")[:, :k]
    rel = (db_y[order] == q_y[:, None]).astype(float)
    hits = rel.sum(1)
    prec = np.cumsum(rel, axis=1) / np.arange(1, rel.shape[1] + 1)
    keep = hits > 0
    return float(((prec * rel).sum(1)[keep] / hits[keep]).mean())


@pytest.fixture(scope="module")
def digits():
    from sklearn.datasets import load_digits
    d = load_digits()
    y = d.target.astype(np.int64)
    split = data.make_splits(y, "ref", 1, 0)[0]
    X = data.standardise(d.data.astype(np.float32), split.train)
    return X, y, split


@pytest.fixture(scope="module")
def trained(digits):
    """Every deep baseline trained on the digits training split (30 epochs, batch 128, Adam 1e-3, 32 bits)."""
    X, y, split = digits
    Xt = torch.from_numpy(X)
    models = {}
    for method in baselines.DEEP:
        torch.manual_seed(0)
        model, loss_fn = baselines.build_deep(method, X.shape[1], BITS, 10, ARGS)
        train(model, loss_fn, Xt[split.train], torch.from_numpy(y[split.train]), num_epochs=30, batch_size=128,
              lr=1e-3, seed=0, desc=method)
        models[method] = model
    return models


def test_registry():
    assert set(baselines.DEEP) == {"bihalf", "dsh", "hashnet", "shc"}
    assert baselines.SUPERVISED == {"dsh", "hashnet", "shc"}
    assert not baselines.SUPERVISED & set(baselines.CLOSED_FORM)
    with pytest.raises(ValueError, match="unknown deep baseline"):
        baselines.build_deep("nope", 8, BITS, 3, ARGS)


def test_supervised_beat_lsh_and_bihalf_beats_random(digits, trained):
    X, y, split = digits
    Xt = torch.from_numpy(X)
    lsh = baselines.CLOSED_FORM["lsh"]().fit(X[split.train], BITS, 0)
    scores = {"lsh": map_at_k(np.asarray(lsh.encode(X[split.query])) > 0, np.asarray(lsh.encode(X[split.db])) > 0,
                              y[split.query], y[split.db], 100)}
    rand = np.random.default_rng(0).integers(0, 2, (len(X), BITS))
    scores["random"] = map_at_k(rand[split.query], rand[split.db], y[split.query], y[split.db], 100)
    for method, model in trained.items():
        q, db = encode(model, Xt[split.query]), encode(model, Xt[split.db])
        scores[method] = map_at_k(q, db, y[split.query], y[split.db], 100)
    # measured (torch 2.13 CPU): lsh 0.49, random 0.14, bihalf 0.66, dsh 0.94, hashnet 0.98, shc 0.97
    for method in ("dsh", "hashnet", "shc"):
        assert scores[method] > scores["lsh"] + 0.25, scores
    assert scores["bihalf"] > scores["random"] + 0.3, scores


def test_codes_are_inductive(digits, trained):
    """The same items encoded in different batches and orders get the same bits."""
    X, _, split = digits
    items = torch.from_numpy(X[split.query])
    perm = torch.randperm(len(items), generator=torch.Generator().manual_seed(1))
    for method, model in trained.items():
        whole = encode(model, items)
        shuffled = encode(model, items[perm], batch_size=7)
        mixed = encode(model, torch.cat([torch.from_numpy(X[split.db[:50]]), items]), batch_size=33)[50:]
        assert np.array_equal(whole[perm.numpy()], shuffled), method
        assert np.array_equal(whole, mixed), method
        assert not model.training


def test_shc_centers(digits, trained):
    X, y, split = digits
    model = trained["shc"]
    c = model.centers
    assert c.shape == (10, BITS)
    assert set(c.unique().tolist()) == {-1.0, 1.0}
    assert model.d_min == BITS // 4
    assert int(model.center_min_dist) == min_hamming(c) >= model.d_min
    sim = model.class_similarity
    assert torch.allclose(sim, sim.T, atol=1e-5) and torch.allclose(sim.diagonal(), torch.ones(10))
    # the centers follow the class similarity: more similar class pairs get closer centers
    off = ~torch.eye(10, dtype=torch.bool)
    ham = (BITS - c @ c.T) / 2
    assert np.corrcoef(sim[off].numpy(), ham[off].numpy())[0, 1] < -0.3
    # prepare is deterministic, and the centers travel in the state_dict (a resumed run needs no prepare)
    again, _ = baselines.build_deep("shc", X.shape[1], BITS, 10, ARGS)
    again.prepare(torch.from_numpy(X[split.train]), torch.from_numpy(y[split.train]))
    assert torch.equal(again.centers, c)
    fresh, _ = baselines.build_deep("shc", X.shape[1], BITS, 10, ARGS)
    fresh.load_state_dict(model.state_dict())
    items = torch.from_numpy(X[split.query])
    assert np.array_equal(encode(fresh, items), encode(model, items))


def test_shc_centers_many_classes_short_codes():
    """40 classes at 16 bits: the d_min = 4 guarantee still holds."""
    model, _ = baselines.build_deep("shc", 8, 16, 40, ARGS)
    sim = torch.eye(40)
    centers = model.make_centers(sim)
    assert min_hamming(centers) >= 4


def test_bihalf_bits_balanced_in_training_sign_at_test():
    torch.manual_seed(0)
    model = BiHalf(16, 32, BITS)
    x = torch.randn(64, 16) * 3 + 1  # shifted inputs: sign(u) alone would not be balanced
    model.train()
    out = model(x)
    assert set(out["bits"].unique().tolist()) == {-1.0, 1.0}
    assert torch.equal(out["bits"].sum(0), torch.zeros(BITS))
    odd = model(x[:63])["bits"]
    assert torch.equal(odd.sum(0), torch.ones(BITS))
    # the batch's top half is +1: every +1 has u at least as large as every -1
    u, b = out["logits"], out["bits"]
    assert all(u[b[:, k] > 0, k].min() >= u[b[:, k] < 0, k].max() for k in range(BITS))
    # straight-through: the forward value is the bits, the gradient reaches u
    assert torch.equal(out["bits_st"].detach(), b)
    out["bits_st"].sum().backward()
    assert model.head[0].weight.grad is not None
    model.eval()
    assert torch.equal(model(x)["bits"] > 0, model.codes(x))
    assert torch.equal(model.codes(x), model.hash_logits(x) > 0)


def test_hashnet_beta_continuation():
    model = HashNet(8, 16, BITS)
    betas = []
    for epoch in range(5):
        model.set_epoch(epoch, 5)
        betas.append(float(model.beta))
    assert betas[0] == pytest.approx(1.0) and betas[-1] == pytest.approx(10.0)
    assert all(a < b for a, b in zip(betas, betas[1:]))
    assert "beta" in model.state_dict()


@pytest.mark.parametrize("method", ["bihalf", "dsh", "hashnet", "shc"])
@pytest.mark.parametrize("labels", ["mixed", "same"])
def test_losses_finite_on_identical_embeddings(method, labels):
    torch.manual_seed(0)
    model, loss_fn = baselines.build_deep(method, 8, BITS, 3, ARGS)
    x = torch.ones(16, 8)
    y = torch.arange(16) % 3 if labels == "mixed" else torch.zeros(16, dtype=torch.long)
    model.prepare(torch.randn(30, 8), torch.arange(30) % 3)
    model.train()
    loss = total(loss_fn(model(x), x, y))
    assert torch.isfinite(loss)
    loss.backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
    zero = torch.zeros(2, 8)
    assert torch.isfinite(total(loss_fn(model(zero), zero, torch.tensor([0, 1]))))
