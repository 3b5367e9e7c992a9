"""Modules: the HAGCN autoencoder and the MLP hash head the deep baselines share.

Every deep method is a HashModel: forward(x) returns a dict of tensors for its loss, `codes(x)` returns
the binary code of each item from that item alone (inductive), and `set_epoch` advances its schedules.
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn

from data import RowSource
from graph import FILTERS, batch_graph, normalised_graph


class HashModel(nn.Module):
    """Base of every deep method; subclasses define forward(x) -> dict and hash_logits(x) -> (B, L). A model with
    `uses_graph` is called as forward(x, adjacency=..., coords=...) with what the global neighbourhood graph gives the
    batch (train.graph_inputs)."""
    uses_graph = False

    def set_epoch(self, epoch: int, num_epochs: int) -> None:
        """Advance training schedules (continuation parameters); the default has none."""

    def prepare(self, X: RowSource, y: torch.Tensor) -> None:
        """Fit what must exist before the loop starts (e.g. SHC's hash centres) from the training rows X (X[:] reads
        them all: a tensor, an array or data.Rows) and labels y; the default needs nothing."""

    def hash_logits(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def code_threshold(self) -> float:
        return 0.0

    @torch.no_grad()
    def codes(self, x: torch.Tensor) -> torch.Tensor:
        """Bits (bool, B x L) of each item from that item alone: no batch statistics, no graph."""
        return self.hash_logits(x) > self.code_threshold()


def mlp(d_in: int, hidden: int, d_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(d_in, hidden), nn.GELU(), nn.Linear(hidden, d_out))


class HAGCN(HashModel):
    """Graph-convolutional hashing autoencoder (SPEC section 2).

        Z1 = GELU(X W1)                 encoder output, the graph signal
        H  = X W2 (linear head) or MLP(Z1) (mlp head)
        P  = sigmoid(alpha H)           relaxed bits; b = sign(P - tau)
        Z3 = g(Lap) Z1                  spectral filter on the batch k-NN graph (built as data)
        X_hat = W5(GELU(W4 Z3))         decoder, W5 = Linear-GELU-Linear
    alpha grows geometrically from `alpha` to `alpha_max` over training (continuation, as in HashNet). Without
    `reconstruct` (the --recon_weight 0 ablation) the filter and the decoder are never run.
    """
    uses_graph = True

    def __init__(self, d_in: int, hidden: int, n_bits: int, task: str, order: int, knn: int,
                 hash_head: str = "linear", graph_source: str = "input", alpha: float = 1.0,
                 alpha_max: float = 10.0, tau: float = 0.5, reconstruct: bool = True):
        super().__init__()
        self.encoder = nn.Sequential(nn.Linear(d_in, hidden), nn.GELU())
        self.head = nn.Linear(d_in, n_bits) if hash_head == "linear" else mlp(hidden, hidden, n_bits)
        self.hash_head = hash_head
        self.filter = FILTERS[task](hidden, order)
        self.decoder = nn.Sequential(nn.Linear(hidden, hidden), nn.GELU(), mlp(hidden, hidden, d_in))
        self.knn, self.graph_source, self.tau, self.reconstruct = knn, graph_source, tau, reconstruct
        self.alpha_start, self.alpha_max = alpha, alpha_max
        self.register_buffer("alpha", torch.tensor(float(alpha)))

    def set_epoch(self, epoch: int, num_epochs: int) -> None:
        frac = epoch / max(num_epochs - 1, 1)
        self.alpha.fill_(self.alpha_start * (self.alpha_max / self.alpha_start) ** frac)

    def hash_logits(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(x if self.hash_head == "linear" else self.encoder(x))

    def code_threshold(self) -> float:
        """sigmoid(alpha H) > tau  <=>  H > logit(tau) / alpha."""
        return math.log(self.tau / (1 - self.tau)) / float(self.alpha)

    def forward(self, x: torch.Tensor, adjacency: torch.Tensor | None = None,
                coords: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """The batch graph: `adjacency`, the batch's edges in the global k-NN graph; else the k-NN among the batch's
        items on `coords`, their diffusion coordinates in the global graph; else on the input or the encoder output
        (--graph_source). `coords` also goes to the loss (the diffusion similarity target)."""
        z1 = self.encoder(x)
        h = self.head(x if self.hash_head == "linear" else z1)
        if adjacency is not None:
            graph = normalised_graph(adjacency)
        else:
            graph = batch_graph(coords if coords is not None else x if self.graph_source == "input" else z1, self.knn)
        recon = self.decoder(self.filter(z1, graph)) if self.reconstruct else None
        return {"z1": z1, "logits": h, "probs": torch.sigmoid(self.alpha * h), "recon": recon,
                "a_hat": graph.a_hat, "coords": coords}


# ----------------------------------------------------------------------------- deep baselines (SPEC section 3)
# Each is the same MLP hash head over the frozen, standardised embeddings (`mlp(d_in, hidden, L)`),
# trained by train.train with its own loss (losses.py); codes = hash_logits(x) > 0, item by item.

class MLPHashHead(HashModel):
    """The MLP hash head (Linear-GELU-Linear) every deep baseline shares: hash_logits(x) = MLP(x)."""

    def __init__(self, d_in: int, hidden: int, n_bits: int):
        super().__init__()
        self.head = mlp(d_in, hidden, n_bits)
        self.n_bits = n_bits

    def hash_logits(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(x)


@torch.no_grad()
def half_half_bits(u: torch.Tensor) -> torch.Tensor:
    """Bi-half assignment: per bit (column), the batch's top half of u gets +1, the bottom half -1.

    This is the optimal transport of the batch's values of one bit onto the half/half distribution on
    {-1, +1}: sort, cut at the median rank. Ties are ordered by a stable sort (lower row first is lower),
    so the split is exactly B/2 : B/2 for an even batch; for an odd batch the extra item gets +1.
    """
    n = u.shape[0]
    order = torch.argsort(u, dim=0, stable=True)
    bits = torch.empty_like(u)
    bits.scatter_(0, order, torch.arange(n, device=u.device, dtype=u.dtype)[:, None].expand_as(u).contiguous())
    return torch.where(bits >= n // 2, 1.0, -1.0).to(u.dtype)


class BiHalf(MLPHashHead):
    """Bi-half hashing (Li & van Gemert, "Deep Unsupervised Image Hashing by Maximizing Bit Entropy", AAAI 2021).

    Training: u = MLP(x); b = half_half_bits(u) (each bit exactly balanced over the batch, i.e. maximal
    bit entropy), with the straight-through gradient dL/du = dL/db (b_st = b + u - u.detach()).
    Test: b = sign(u), item by item; the batch median is never used outside training.
    """

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        u = self.head(x)
        b = half_half_bits(u) if self.training else torch.where(u > 0, 1.0, -1.0).to(u.dtype)
        return {"logits": u, "bits": b, "bits_st": b + (u - u.detach())}  # value exactly b, gradient to u


class DSH(MLPHashHead):
    """Deep Supervised Hashing (Liu, Wang, Shan & Chen, CVPR 2016): real-valued outputs u = MLP(x) trained
    with the pairwise margin loss (losses.dsh_loss); codes = sign(u)."""

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"logits": self.head(x)}


class HashNet(MLPHashHead):
    """HashNet (Cao, Long, Wang & Yu, "HashNet: Deep Learning to Hash by Continuation", ICCV 2017).

    u = tanh(beta * h), h = MLP(x). Continuation: beta grows geometrically per epoch from `beta_start`
    (1) to `beta_max` (10 by default: the paper's beta = (1 + 0.005 t)^0.5 reaches 10 after t ~ 20,000
    iterations), so tanh tends to sign. beta is a buffer: it is saved in checkpoints. Codes = sign(h)
    = sign(u) for any beta > 0.
    """

    def __init__(self, d_in: int, hidden: int, n_bits: int, beta_start: float = 1.0, beta_max: float = 10.0):
        super().__init__(d_in, hidden, n_bits)
        self.beta_start, self.beta_max = beta_start, beta_max
        self.register_buffer("beta", torch.tensor(float(beta_start)))

    def set_epoch(self, epoch: int, num_epochs: int) -> None:
        frac = epoch / max(num_epochs - 1, 1)
        self.beta.fill_(self.beta_start * (self.beta_max / self.beta_start) ** frac)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        h = self.head(x)
        return {"logits": h, "u": torch.tanh(self.beta * h)}


class SHC(MLPHashHead):
    """Semantic hash centers (Chen et al., 2024, the "hash centers" family: class similarity from a classifier,
    one hash center per class with a minimum Hamming distance, then training toward the centers).

    prepare(X, y), before the training loop, deterministic (own generator seeded with `seed`):
      1. a linear softmax classifier on the training embeddings (sigmoid outputs and binary cross-entropy for
         multi-hot labels, each class's mean taken over the items having it), `clf_steps` full-batch Adam steps;
         class similarity S_ij = cosine of the mean softmax outputs of classes i and j, softmax at
         `temperature` 3 (at 1 the classifier is nearly one-hot on its own training rows and every
         off-diagonal S is ~0 on digits; at 3 the confusable pairs such as 1/8 and 8/9 reach ~0.35)
         (S_ii = 1; a class absent from the training rows gets S = 0 to every other class).
      2. centers c_i in {-1,+1}^L: target Hamming distance
            t_ij = L/2 - (L/2 - d_min) * clip(S_ij, 0, 1)
         (unrelated classes: L/2, as for random/Hadamard centers; the most similar: d_min), i.e. the target
         inner product <c_i, c_j>/L = 1 - 2 t_ij / L. Relaxed c = tanh(V), V from seeded random signs,
         `center_steps` Adam steps on  mean_ij (<c_i,c_j>/L - target_ij)^2
            + mean_ij relu(d_min - ham_ij)^2 / L^2 * 10 + 0.1 * mean (1 - |c|)^2,
         then c = sign(V), a deterministic discrete descent on the same objective (refine_centers: one
         best bit flip per center per sweep), and a greedy bit-flip repair until every pair is at Hamming
         distance >= d_min (d_min = L // 4 by default) or no flip helps.
      The centers, the class similarity and the achieved minimum distance are buffers (saved in
      checkpoints, so a resumed run needs no prepare); `prepare` warns if the achieved minimum < d_min.
    Training: losses.shc_loss (BCE of (u+1)/2 toward (c_y+1)/2, u = tanh(h), plus a quantisation term; an item
    with several labels aims at the sign of the sum of their centers).
    """

    def __init__(self, d_in: int, hidden: int, n_bits: int, n_classes: int, seed: int = 0,
                 d_min: int | None = None, clf_steps: int = 300, center_steps: int = 500,
                 temperature: float = 3.0):
        super().__init__(d_in, hidden, n_bits)
        self.n_classes, self.seed = n_classes, seed
        self.d_min = n_bits // 4 if d_min is None else d_min
        self.clf_steps, self.center_steps, self.temperature = clf_steps, center_steps, temperature
        self.register_buffer("centers", torch.zeros(n_classes, n_bits))
        self.register_buffer("class_similarity", torch.eye(n_classes))
        self.register_buffer("center_min_dist", torch.tensor(-1))

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        h = self.head(x)
        return {"logits": h, "centers": self.centers}

    def prepare(self, X: RowSource, y: torch.Tensor) -> None:
        sim = self.fit_class_similarity(torch.as_tensor(X[:], device=y.device), y)
        centers = self.make_centers(sim)
        self.class_similarity.copy_(sim.to(self.class_similarity.device))
        self.centers.copy_(centers.to(self.centers.device))
        self.center_min_dist.fill_(min_hamming(centers))
        if int(self.center_min_dist) < self.d_min:
            import warnings
            warnings.warn(f"SHC: hash centers reach a minimum Hamming distance of {int(self.center_min_dist)} "
                          f"< d_min = {self.d_min} ({self.n_classes} classes, {self.centers.shape[1]} bits)")

    @torch.no_grad()
    def fit_class_similarity(self, X: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Stage 1: C x C cosine similarity of the classes' mean outputs of a linear classifier: softmax and
        cross-entropy for integer labels (n,), sigmoid and binary cross-entropy for multi-hot labels (n, C),
        where a class's mean is over the items having that class. The gradient is written out, dL/dlogits =
        (p - target) / count for both losses, so that both products read X in its row-major layout (W^T X^T and
        G^T X): with autograd's X^T G the stage took 2.9x as long on 56,000 x 784 rows (one thread)."""
        gen = torch.Generator().manual_seed(self.seed)
        d, c = X.shape[1], self.n_classes
        W = (torch.randn(d, c, generator=gen) / math.sqrt(d)).to(X.device)
        b = torch.zeros(c, device=X.device)
        opt = torch.optim.Adam([W, b], lr=1e-2, weight_decay=1e-4)
        Xd = X.float()
        multi = y.dim() == 2
        member = y.float() if multi else nn.functional.one_hot(y.long(), c).float()  # (n, C) class membership
        for _ in range(self.clf_steps):
            logits = (W.T @ Xd.T).T + b
            probs = torch.sigmoid(logits) if multi else torch.softmax(logits, dim=1)
            grad = (probs - member) / (member.numel() if multi else len(member))
            W.grad, b.grad = (grad.T @ Xd).T, grad.sum(0)
            opt.step()
        scaled = (Xd @ W + b) / self.temperature
        probs = torch.sigmoid(scaled) if multi else torch.softmax(scaled, dim=1)
        sums = member.T @ probs if multi else torch.zeros(c, c, device=X.device).index_add_(0, y.long(), probs)
        counts = member.sum(0)
        present = counts > 0
        unit = nn.functional.normalize(sums / counts.clamp(min=1)[:, None], dim=1)
        sim = unit @ unit.T
        sim = torch.where(present[:, None] & present[None, :], sim, torch.zeros_like(sim))
        sim.fill_diagonal_(1.0)
        return sim.cpu()

    @torch.enable_grad()
    def make_centers(self, sim: torch.Tensor) -> torch.Tensor:
        """Stage 2: {-1,+1} centers (C x L, on the CPU) whose inner products follow `sim`, min distance d_min."""
        c, n_bits = sim.shape[0], self.centers.shape[1]
        gen = torch.Generator().manual_seed(self.seed + 1)
        half = n_bits / 2
        target_ham = half - (half - self.d_min) * sim.clamp(0, 1)
        target_ip = 1 - 2 * target_ham / n_bits
        off = ~torch.eye(c, dtype=torch.bool)
        V = (torch.randint(0, 2, (c, n_bits), generator=gen).float() * 2 - 1).requires_grad_()
        opt = torch.optim.Adam([V], lr=0.05)
        for _ in range(self.center_steps if c > 1 else 0):
            cen = torch.tanh(V)
            ip = cen @ cen.T / n_bits
            ham = n_bits * (1 - ip) / 2
            loss = ((ip - target_ip)[off] ** 2).mean() \
                + 10 * (torch.relu(self.d_min - ham)[off] / n_bits).pow(2).mean() \
                + 0.1 * ((1 - cen.abs()) ** 2).mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        centers = torch.where(V.detach() >= 0, 1.0, -1.0)
        centers = refine_centers(centers, target_ip, self.d_min)
        return repair_min_distance(centers, self.d_min)


def min_hamming(centers: torch.Tensor) -> int:
    """Smallest Hamming distance between two rows of a {-1,+1} matrix (L when there is one row)."""
    c, n_bits = centers.shape
    if c < 2:
        return n_bits
    ham = (n_bits - centers @ centers.T) / 2
    ham.fill_diagonal_(float(n_bits))
    return int(ham.min().round())


def center_energy_rows(ip: torch.Tensor, target_ip: torch.Tensor, d_min: int, n_bits: int) -> torch.Tensor:
    """Discrete center objective per (row, candidate): sum over j != i of (ip/L - target)^2 + 10 (relu(d_min - ham)/L)^2.

    ip: (..., C) inner products of one center with every center; target_ip: (C,) its targets (own entry
    ignored by the caller). Returns (...,) energies."""
    ham = (n_bits - ip) / 2
    return ((ip / n_bits - target_ip) ** 2 + 10 * (torch.relu(d_min - ham) / n_bits) ** 2).sum(-1)


def refine_centers(centers: torch.Tensor, target_ip: torch.Tensor, d_min: int, max_sweeps: int = 50) -> torch.Tensor:
    """Deterministic discrete descent on the center objective: sweep the centers in order and flip, in each,
    the one bit that lowers its energy most (if any); stop after a sweep with no flip."""
    centers = centers.clone()
    c, n_bits = centers.shape
    if c < 2:
        return centers
    for _ in range(max_sweeps):
        changed = False
        for i in range(c):
            ip = centers @ centers[i]                                   # (C,)
            # flipping bit k of center i changes <c_i, c_j> by -2 c_ik c_jk (j != i)
            cand = ip[None, :] - 2 * centers[i][:, None] * centers.T    # (L, C)
            keep = torch.ones(c, dtype=torch.bool)
            keep[i] = False
            now = center_energy_rows(ip[keep], target_ip[i][keep], d_min, n_bits)
            after = center_energy_rows(cand[:, keep], target_ip[i][keep], d_min, n_bits)
            k = int(after.argmin())
            if after[k] < now - 1e-9:
                centers[i, k] = -centers[i, k]
                changed = True
        if not changed:
            break
    return centers


def repair_min_distance(centers: torch.Tensor, d_min: int, max_flips: int = 10000) -> torch.Tensor:
    """Greedy, deterministic: while the closest pair (i, j) is nearer than d_min, flip the bit of center i
    that most raises i's distance to its nearest other center (ties: the lower bit); stop when no flip helps."""
    centers = centers.clone()
    c, n_bits = centers.shape
    if c < 2:
        return centers
    for _ in range(max_flips):
        ham = (n_bits - centers @ centers.T) / 2
        ham.fill_diagonal_(float(n_bits))
        if ham.min() >= d_min:
            break
        i = int(ham.min(dim=1).values.argmin())
        # distance of i to every other center after flipping bit k: ham + (1 if bits agree else -1)
        agree = (centers[i][None, :] == centers).float()          # (C, L)
        after = ham[i][:, None] + 2 * agree - 1                     # (C, L)
        after[i] = float(n_bits)
        worst_after = after.min(dim=0).values                       # (L,)
        k = int(worst_after.argmax())
        if worst_after[k] <= ham[i].min():
            break
        centers[i, k] = -centers[i, k]
    return centers
