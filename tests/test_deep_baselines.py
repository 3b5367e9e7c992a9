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


# ----------------------------------------------------------------------------- multi-label (multi-hot) labels

def multi_label_blobs(n: int = 600, n_classes: int = 4, dim: int = 16, seed: int = 0):
    """Items with one or two of `n_classes` labels; an item's embedding is the sum of its classes' centres plus
    noise. Returns (X standardised on the training split, Y (n, C) uint8, split)."""
    rng = np.random.default_rng(seed)
    Y = np.zeros((n, n_classes), np.uint8)
    Y[np.arange(n), rng.integers(0, n_classes, n)] = 1
    second = rng.random(n) < 0.5
    Y[np.flatnonzero(second), rng.integers(0, n_classes, second.sum())] = 1
    X = (Y @ rng.normal(0, 3, (n_classes, dim)) + rng.normal(0, 1, (n, dim))).astype(np.float32)
    split = data.make_splits(Y, "ref", 1, seed)[0]
    return data.standardise(X, split.train), Y, split


@pytest.mark.parametrize("method", list(baselines.DEEP))
def test_each_deep_baseline_learns_on_multi_hot_labels(method):
    """Trained on multi-hot labels (10 epochs), every method ranks items sharing a label above random codes."""
    from evaluate import mean_average_precision
    X, Y, split = multi_label_blobs()
    torch.manual_seed(0)
    model, loss_fn = baselines.build_deep(method, X.shape[1], 16, Y.shape[1], SimpleNamespace(hidden=64, seed=0))
    Xt = torch.from_numpy(X)
    train(model, loss_fn, Xt[split.train], torch.from_numpy(Y[split.train]), num_epochs=10, batch_size=64,
          lr=1e-3, seed=0, desc=method)
    q, db = encode(model, Xt[split.query]), encode(model, Xt[split.db])
    got = mean_average_precision(q, db, Y[split.query], Y[split.db], 20)
    rng = np.random.default_rng(1)
    chance = mean_average_precision(rng.integers(0, 2, q.shape), rng.integers(0, 2, db.shape),
                                    Y[split.query], Y[split.db], 20)
    assert got > chance + 0.1, (got, chance)


def test_shc_multi_label_similarity_from_a_sigmoid_classifier():
    """Classes 0 and 1 always appear together, 2 and 3 never with another: only 0 and 1 come out similar; the
    multi-hot branch (sigmoid/BCE) differs from feeding the first label to the softmax branch."""
    rng = np.random.default_rng(0)
    n = 400
    Y = np.zeros((n, 4), np.uint8)
    kind = rng.integers(0, 3, n)  # 0: classes {0, 1}; 1: {2}; 2: {3}
    Y[kind == 0, 0] = Y[kind == 0, 1] = 1
    Y[kind == 1, 2] = 1
    Y[kind == 2, 3] = 1
    X = torch.from_numpy((rng.normal(0, 3, (3, 8))[kind] + rng.normal(0, 1, (n, 8))).astype(np.float32))
    model, _ = baselines.build_deep("shc", 8, 16, 4, ARGS)
    sim = model.fit_class_similarity(X, torch.from_numpy(Y))
    assert sim[0, 1] > 0.9 and sim[0, 2] < 0.5 and sim[2, 3] < 0.5 and torch.allclose(sim, sim.T)
    model.prepare(X, torch.from_numpy(Y))
    h = torch.zeros(2, 16, requires_grad=True)
    target = torch.where(torch.tensor([[1.0, 1, 0, 0]]) @ model.centers >= 0, 1.0, -1.0)
    loss = total(baselines.losses.shc_loss({"logits": h, "centers": model.centers}, X[:2],
                                           torch.tensor([[1, 1, 0, 0]] * 2)))
    loss.backward()
    assert torch.equal(torch.sign(-h.grad[0]), target[0])  # pulled toward the sign of the summed centres



def autograd_classifier(X: torch.Tensor, y: torch.Tensor, c: int, seed: int, steps: int) -> torch.Tensor:
    """SHC's stage-1 classifier trained by autograd, as the paper's loss reads: its (W, b) after `steps` Adam steps."""
    gen = torch.Generator().manual_seed(seed)
    W = (torch.randn(X.shape[1], c, generator=gen) / X.shape[1] ** 0.5).requires_grad_()
    b = torch.zeros(c, requires_grad=True)
    opt = torch.optim.Adam([W, b], lr=1e-2, weight_decay=1e-4)
    for _ in range(steps):
        logits = X @ W + b
        loss = (torch.nn.functional.binary_cross_entropy_with_logits(logits, y.float()) if y.dim() == 2
                else torch.nn.functional.cross_entropy(logits, y))
        opt.zero_grad()
        loss.backward()
        opt.step()
    return torch.cat([W.detach(), b.detach()[None]])


@pytest.mark.parametrize("multi", [False, True])
def test_shc_classifier_gradient_is_the_losses_gradient(multi):
    """fit_class_similarity writes the cross-entropy's gradient out (for speed); after 20 Adam steps its class
    similarity equals the one of a classifier trained by autograd on the loss itself, softmax or sigmoid."""
    rng = np.random.default_rng(1)
    X = torch.from_numpy(rng.normal(size=(300, 12)).astype(np.float32))
    y = torch.from_numpy(rng.integers(0, 2, (300, 5)) if multi else rng.integers(0, 5, 300))
    model, _ = baselines.build_deep("shc", 12, 16, 5, ARGS)
    model.clf_steps = 20
    ref = autograd_classifier(X, y, 5, ARGS.seed, 20)
    scaled = (X @ ref[:-1] + ref[-1]) / model.temperature
    probs = torch.sigmoid(scaled) if multi else torch.softmax(scaled, dim=1)
    member = y.float() if multi else torch.nn.functional.one_hot(y, 5).float()
    unit = torch.nn.functional.normalize(member.T @ probs / member.sum(0)[:, None], dim=1)
    assert torch.allclose(model.fit_class_similarity(X, y), (unit @ unit.T).fill_diagonal_(1.0), atol=1e-5)


@pytest.mark.parametrize("loss", ["dsh_loss", "hashnet_loss"])
def test_pairwise_losses_read_one_hot_rows_as_integer_labels(loss):
    """The multi-hot path of losses.pair_similarity: one-hot rows give exactly the integer-label loss, and
    s_ij = 1 exactly when two multi-hot rows share a class (a plain per-pair reference)."""
    torch.manual_seed(0)
    out = {"logits": torch.randn(12, 8), "u": torch.tanh(torch.randn(12, 8))}
    y = torch.arange(12) % 3
    fn = lambda out, x, y: total(getattr(baselines.losses, loss)(out, x, y))
    assert torch.allclose(fn(out, None, y), fn(out, None, torch.nn.functional.one_hot(y, 3).to(torch.uint8)))
    Y = (torch.rand(12, 5) < 0.4).to(torch.uint8)
    ref = [[float(any(Y[i, c] and Y[j, c] for c in range(5))) for j in range(12)] for i in range(12)]
    assert torch.equal(baselines.losses.pair_similarity(Y), torch.tensor(ref))
