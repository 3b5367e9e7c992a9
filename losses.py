"""Losses. Each takes the model's output dict, the batch x and its labels y, and returns a scalar."""
from __future__ import annotations

import torch
import torch.nn.functional as F


@torch.no_grad()
def similarity_target(x: torch.Tensor, a_hat: torch.Tensor, kind: str) -> torch.Tensor:
    """Batch similarity target S in [-1, 1] for the code inner products.

    cosine: S_ij = cos(x_i, x_j).   knn: S_ij = 1 for k-NN graph neighbours (and i = j), else 0.
    """
    if kind == "cosine":
        unit = F.normalize(x, dim=1)
        return unit @ unit.T
    if kind == "knn":
        return (a_hat > 0).to(x.dtype)
    raise ValueError(f"unknown similarity target {kind!r}")


def hagcn_loss(out: dict, x: torch.Tensor, y: torch.Tensor, *, lambda_: float, form: str = "ours",
               target: str = "knn") -> torch.Tensor:
    """Reconstruction + similarity preservation.

    ours:       MSE(X_hat, X) + lambda * mean((P_s P_s^T / L - S)^2),  P_s = 2P - 1
    paper_repo: MSE(X_hat, X) + lambda * mean((P_s P_s^T - L * Z1 Z1^T / B)^2)  (the paper repo's form)
    """
    probs = out["probs"]
    n, n_bits = probs.shape
    ps = 2 * probs - 1
    recon = F.mse_loss(out["recon"], x)
    if form == "paper_repo":
        z1 = out["z1"]
        return recon + lambda_ * ((ps @ ps.T - n_bits * (z1 @ z1.T) / n) ** 2).mean()
    s = similarity_target(x, out["a_hat"], target)
    return recon + lambda_ * ((ps @ ps.T / n_bits - s) ** 2).mean()
