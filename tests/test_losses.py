"""losses.py against explicit per-pair loops: the HAGCN loss in both forms (ours, the paper repo's), its similarity
targets, and the pairwise losses of DSH and HashNet; every loss stays finite on degenerate batches."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import losses
from model import HAGCN


def outputs(n: int = 7, bits: int = 5, d: int = 4, seed: int = 0) -> tuple[dict, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=gen, dtype=torch.float64)
    a_hat = torch.rand(n, n, generator=gen, dtype=torch.float64) * (torch.rand(n, n, generator=gen) > 0.5)
    a_hat = a_hat + a_hat.T + torch.eye(n, dtype=torch.float64)
    out = {"probs": torch.rand(n, bits, generator=gen, dtype=torch.float64, requires_grad=True),
           "recon": torch.randn(n, d, generator=gen, dtype=torch.float64),
           "z1": torch.randn(n, 3, generator=gen, dtype=torch.float64), "a_hat": a_hat}
    return out, x


def test_hagcn_loss_ours_matches_a_pair_loop():
    out, x = outputs()
    n, bits = out["probs"].shape
    for target in ("knn", "cosine"):
        loss = losses.total(losses.hagcn_loss(out, x, None, lambda_=0.3, target=target))
        ps = 2 * out["probs"].detach() - 1
        total = 0.0
        for i in range(n):
            for j in range(n):
                if target == "knn":
                    s = 1.0 if out["a_hat"][i, j] > 0 else 0.0
                else:
                    s = float(x[i] @ x[j] / (x[i].norm() * x[j].norm()))
                total += (float(ps[i] @ ps[j]) / bits - s) ** 2
        ref = float(((out["recon"] - x) ** 2).mean()) + 0.3 * total / n ** 2
        assert loss.detach().item() == pytest.approx(ref, rel=1e-10)


def test_hagcn_loss_paper_repo_form():
    out, x = outputs()
    n, bits = out["probs"].shape
    ps = 2 * out["probs"].detach() - 1
    z1 = out["z1"]
    total = sum((float(ps[i] @ ps[j]) - bits * float(z1[i] @ z1[j]) / n) ** 2 for i in range(n) for j in range(n))
    ref = float(F.mse_loss(out["recon"], x)) + 1e-4 * total / n ** 2
    loss = losses.total(losses.hagcn_loss(out, x, None, lambda_=1e-4, form="paper_repo"))
    assert loss.detach().item() == pytest.approx(ref, rel=1e-10)


def test_similarity_targets_in_range_and_unknown_kind_rejected():
    out, x = outputs()
    for kind in ("knn", "cosine"):
        s = losses.similarity_target(x, out["a_hat"], kind)
        assert s.shape == (7, 7) and s.min() >= -1 - 1e-12 and s.max() <= 1 + 1e-12
        torch.testing.assert_close(s, s.T)
        assert not s.requires_grad
    with pytest.raises(ValueError, match="unknown similarity target"):
        losses.similarity_target(x, out["a_hat"], "jaccard")


def test_diffusion_target_is_the_cosine_of_the_batch_coordinates_and_needs_them():
    out, x = outputs()
    coords = torch.randn(7, 4, generator=torch.Generator().manual_seed(5), dtype=x.dtype)
    s = losses.similarity_target(x, out["a_hat"], "diffusion", coords)
    want = torch.tensor([[float(np.dot(a, b) / np.linalg.norm(a) / np.linalg.norm(b)) for b in coords.numpy()]
                         for a in coords.numpy()], dtype=x.dtype)
    torch.testing.assert_close(s, want)
    with pytest.raises(ValueError, match="diffusion coordinates"):
        losses.similarity_target(x, out["a_hat"], "diffusion")


def test_lambda_zero_is_pure_reconstruction():
    out, x = outputs()
    terms = losses.hagcn_loss(out, x, None, lambda_=0.0)
    assert sorted(terms) == ["reconstruction", "similarity"] and terms["similarity"].item() == 0
    assert losses.total(terms).detach().item() == pytest.approx(float(F.mse_loss(out["recon"], x)))


def test_similarity_term_reaches_the_hash_probabilities():
    out, x = outputs()
    losses.hagcn_loss(out, x, None, lambda_=1.0)["similarity"].backward()
    assert out["probs"].grad is not None and out["probs"].grad.abs().sum() > 0


def test_dsh_loss_matches_a_pair_loop():
    gen = torch.Generator().manual_seed(1)
    u = torch.randn(6, 4, generator=gen, dtype=torch.float64)
    y = torch.tensor([0, 1, 0, 2, 1, 0])
    m, alpha = 8.0, 0.01
    pairs = []
    for i in range(6):
        for j in range(6):
            if i != j:
                dist = float(((u[i] - u[j]) ** 2).sum())
                pairs.append(0.5 * dist if y[i] == y[j] else 0.5 * max(m - dist, 0.0))
    ref = sum(pairs) / len(pairs) + alpha * float((u.abs() - 1).abs().sum(1).mean())
    assert float(losses.total(losses.dsh_loss({"logits": u}, None, y, alpha=alpha))) == pytest.approx(ref, rel=1e-10)


def test_hashnet_loss_matches_a_pair_loop():
    gen = torch.Generator().manual_seed(2)
    u = torch.tanh(torch.randn(6, 8, generator=gen, dtype=torch.float64))
    y = torch.tensor([0, 1, 0, 2, 1, 0])
    a = 10.0 / 8
    pairs = [(i, j) for i in range(6) for j in range(6) if i != j]
    n_sim = sum(1 for i, j in pairs if y[i] == y[j])
    total = 0.0
    for i, j in pairs:
        s = float(y[i] == y[j])
        w = len(pairs) / n_sim if s else len(pairs) / (len(pairs) - n_sim)
        ip = a * float(u[i] @ u[j])
        total += w * (math.log1p(math.exp(ip)) - s * ip)
    # pair_similarity returns float32, so the weights carry float32 rounding
    assert float(losses.total(losses.hashnet_loss({"u": u}, None, y))) == pytest.approx(total / len(pairs), rel=1e-6)


@pytest.mark.parametrize("form", ["ours", "paper_repo"])
@pytest.mark.parametrize("n", [1, 2, 16])
def test_hagcn_loss_finite_on_identical_items_and_tiny_batches(form, n):
    torch.manual_seed(0)
    model = HAGCN(6, 8, 4, "spline", 3, 2)
    for x in (torch.ones(n, 6), torch.zeros(n, 6)):
        loss = losses.total(losses.hagcn_loss(model(x), x, None, lambda_=1.0, form=form))
        loss.backward()
        assert torch.isfinite(loss)
        assert all(p.grad is None or torch.isfinite(p.grad).all() for p in model.parameters())


def test_recon_weight_scales_the_reconstruction_term_only():
    torch.manual_seed(0)
    out = {"probs": torch.rand(6, 8), "recon": torch.randn(6, 5), "a_hat": torch.eye(6), "z1": torch.randn(6, 4)}
    x = torch.randn(6, 5)
    one = losses.hagcn_loss(out, x, None, lambda_=1.0, target="knn")
    half = losses.hagcn_loss(out, x, None, lambda_=1.0, target="knn", recon_weight=0.5)
    assert half["reconstruction"] == pytest.approx(0.5 * one["reconstruction"])
    assert torch.equal(half["similarity"], one["similarity"])
