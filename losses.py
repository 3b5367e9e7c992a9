"""Losses. Each takes the model's output dict, the batch x and its labels y, and returns its named terms, a dict of
scalars whose sum (`total`) is the loss; train.train records each term per epoch (epochs.csv)."""
from __future__ import annotations

import torch
import torch.nn.functional as F


@torch.no_grad()
def similarity_target(x: torch.Tensor, a_hat: torch.Tensor | None, kind: str,
                      coords: torch.Tensor | None = None) -> torch.Tensor:
    """Batch similarity target S in [-1, 1] for the code inner products.

    cosine: S_ij = cos(x_i, x_j).   knn: S_ij = 1 for batch-graph neighbours (and i = j), else 0.
    diffusion: S_ij = cos(c_i, c_j) of the items' diffusion coordinates in the global k-NN graph (graph.diffusion_map):
    a low-pass kernel of the whole training graph, which links items of one cluster that are not neighbours.
    """
    if kind in ("cosine", "diffusion"):
        if kind == "diffusion" and coords is None:
            raise ValueError("the diffusion target needs the batch's diffusion coordinates")
        unit = F.normalize(x if kind == "cosine" else coords, dim=1)
        return unit @ unit.T
    if kind == "knn":
        return (a_hat > 0).to(x.dtype)
    raise ValueError(f"unknown similarity target {kind!r}")


def total(terms: dict[str, torch.Tensor] | torch.Tensor) -> torch.Tensor:
    """The loss: the sum of a loss function's terms (a scalar passes through)."""
    return sum(terms.values()) if isinstance(terms, dict) else terms


def hagcn_loss(out: dict, x: torch.Tensor, y: torch.Tensor, *, lambda_: float, form: str = "ours",
               target: str = "knn", recon_weight: float = 1.0) -> dict[str, torch.Tensor]:
    """Reconstruction + similarity preservation (terms 'reconstruction', with recon_weight, and 'similarity', with
    lambda; without out["recon"], the model's --recon_weight 0 ablation, the similarity term alone).

    ours:       MSE(X_hat, X) + lambda * mean((P_s P_s^T / L - S)^2),  P_s = 2P - 1
    paper_repo: MSE(X_hat, X) + lambda * mean((P_s P_s^T - L * Z1 Z1^T / B)^2)  (the paper repo's form)
    """
    probs = out["probs"]
    n, n_bits = probs.shape
    ps = 2 * probs - 1
    terms = {} if out["recon"] is None else {"reconstruction": recon_weight * F.mse_loss(out["recon"], x)}
    if form == "paper_repo":
        z1 = out["z1"]
        return {**terms, "similarity": lambda_ * ((ps @ ps.T - n_bits * (z1 @ z1.T) / n) ** 2).mean()}
    s = similarity_target(x, out["a_hat"], target, out.get("coords"))
    return {**terms, "similarity": lambda_ * ((ps @ ps.T / n_bits - s) ** 2).mean()}


# ----------------------------------------------------------------------------- deep baselines (SPEC section 3)

def pair_similarity(y: torch.Tensor) -> torch.Tensor:
    """s_ij = 1 when items i and j share a label (integer labels: equal; one-hot/multi-label rows: a common 1)."""
    if y.dim() == 1:
        return (y[:, None] == y[None, :]).float()
    yf = y.float()
    return (yf @ yf.T > 0).float()


def off_diagonal(n: int, device: torch.device) -> torch.Tensor:
    return ~torch.eye(n, dtype=torch.bool, device=device)


def bihalf_loss(out: dict, x: torch.Tensor, y: torch.Tensor, *, gamma: float = 1.0) -> dict[str, torch.Tensor]:
    """Bi-half (Li & van Gemert, AAAI 2021), unsupervised, on embeddings instead of images.

        mean((B B^T / L - S)^2) + gamma * mean((u - B)^2)

    B: the batch's half/half bits with the straight-through gradient (out["bits_st"]); S = cosine
    similarity of the input embeddings (similarity preservation replaces the paper's image-pair objective,
    since the embeddings are frozen). The second term is the paper's gradient-consistency term gamma (U - B)
    written as a loss: it keeps u near its assigned bit, so sign(u) at test time matches the training bits
    (without it the test codes degenerate: digits, 32 bits, mAP@100 0.45 at gamma 0, 0.66 at 0.1, 0.76 at 1,
    0.76 at 3, 0.73 at 10; default 1).
    """
    b, u = out["bits_st"], out["logits"]
    n_bits = b.shape[1]
    s = similarity_target(x, None, "cosine")
    return {"similarity": ((b @ b.T / n_bits - s) ** 2).mean(), "consistency": gamma * ((u - out["bits"]) ** 2).mean()}


def dsh_loss(out: dict, x: torch.Tensor, y: torch.Tensor, *, alpha: float = 0.01,
             margin: float | None = None) -> dict[str, torch.Tensor]:
    """DSH (Liu et al., CVPR 2016), averaged over the pairs i != j of the batch:

        0.5 s_ij D_ij + 0.5 (1 - s_ij) max(m - D_ij, 0),   D_ij = ||u_i - u_j||^2,  m = 2L
      + alpha * mean_i || |u_i| - 1 ||_1                    (the paper's regulariser, summed over bits)
    """
    u = out["logits"]
    n, n_bits = u.shape
    m = 2.0 * n_bits if margin is None else margin
    s = pair_similarity(y)
    sq = (u * u).sum(1)
    dist = (sq[:, None] + sq[None, :] - 2 * u @ u.T).clamp(min=0)
    pair = 0.5 * s * dist + 0.5 * (1 - s) * torch.relu(m - dist)
    mask = off_diagonal(n, u.device)
    pair_term = pair[mask].mean() if n > 1 else u.sum() * 0
    return {"pairwise": pair_term, "quantisation": alpha * (u.abs() - 1).abs().sum(1).mean()}


def hashnet_loss(out: dict, x: torch.Tensor, y: torch.Tensor, *, scale: float | None = None) -> dict[str, torch.Tensor]:
    """HashNet (Cao et al., ICCV 2017): weighted pairwise cross-entropy on the inner products, pairs i != j,

        w_ij (log(1 + exp(a <u_i,u_j>)) - s_ij a <u_i,u_j>),   u = tanh(beta h),  a = scale = 10 / L,

    i.e. -log p(s_ij | u_i, u_j) with p = sigmoid(a <u_i,u_j>) (softplus: numerically stable).
    w_ij = |S| / |S1| for similar pairs and |S| / |S0| for dissimilar ones (S: all pairs of the batch,
    S1 / S0: the similar / dissimilar ones), so both kinds weigh the same in total; mean over pairs.
    """
    u = out["u"]
    n, n_bits = u.shape
    a = 10.0 / n_bits if scale is None else scale
    s = pair_similarity(y)
    ip = a * (u @ u.T)
    mask = off_diagonal(n, u.device)
    if n < 2:
        return {"pairwise": u.sum() * 0}
    s_off = s[mask]
    total = float(s_off.numel())
    n_sim = s_off.sum()
    w = torch.where(s_off > 0, total / n_sim.clamp(min=1), total / (total - n_sim).clamp(min=1))
    return {"pairwise": (w * (F.softplus(ip[mask]) - s_off * ip[mask])).mean()}


def shc_loss(out: dict, x: torch.Tensor, y: torch.Tensor, *, quant: float = 0.1) -> dict[str, torch.Tensor]:
    """SHC (Chen et al., 2024), training toward the hash centers:

        BCE((u + 1) / 2, (c_y + 1) / 2) + quant * mean((|u| - 1)^2),   u = tanh(h)

    with (u + 1) / 2 = sigmoid(2h), computed from the logits 2h for stability. Multi-label rows (one-hot
    or several 1s) take the sign of the mean of their classes' centers (0 -> +1).
    """
    h, centers = out["logits"], out["centers"]
    if y.dim() == 1:
        target = centers[y]
    else:
        target = torch.where(y.float() @ centers >= 0, 1.0, -1.0)
    u = torch.tanh(h)
    bce = F.binary_cross_entropy_with_logits(2 * h, (target + 1) / 2)
    return {"center": bce, "quantisation": quant * ((u.abs() - 1) ** 2).mean()}
