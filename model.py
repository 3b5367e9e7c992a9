"""Modules: the HAGCN autoencoder and the MLP hash head the deep baselines share.

Every deep method is a HashModel: forward(x) returns a dict of tensors for its loss, `codes(x)` returns
the binary code of each item from that item alone (inductive), and `set_epoch` advances its schedules.
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn

from graph import FILTERS, batch_graph


class HashModel(nn.Module):
    """Base of every deep method; subclasses define forward(x) -> dict and hash_logits(x) -> (B, L)."""

    def set_epoch(self, epoch: int, num_epochs: int) -> None:
        """Advance training schedules (continuation parameters); the default has none."""

    def prepare(self, X: torch.Tensor, y: torch.Tensor) -> None:
        """Fit what must exist before the loop starts (e.g. SHC's hash centres); the default needs nothing."""

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
    alpha grows geometrically from `alpha` to `alpha_max` over training (continuation, as in HashNet).
    """

    def __init__(self, d_in: int, hidden: int, n_bits: int, task: str, order: int, knn: int,
                 hash_head: str = "linear", graph_source: str = "input", alpha: float = 1.0,
                 alpha_max: float = 10.0, tau: float = 0.5):
        super().__init__()
        self.encoder = nn.Sequential(nn.Linear(d_in, hidden), nn.GELU())
        self.head = nn.Linear(d_in, n_bits) if hash_head == "linear" else mlp(hidden, hidden, n_bits)
        self.hash_head = hash_head
        self.filter = FILTERS[task](hidden, order)
        self.decoder = nn.Sequential(nn.Linear(hidden, hidden), nn.GELU(), mlp(hidden, hidden, d_in))
        self.knn, self.graph_source, self.tau = knn, graph_source, tau
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

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        z1 = self.encoder(x)
        h = self.head(x if self.hash_head == "linear" else z1)
        graph = batch_graph(x if self.graph_source == "input" else z1, self.knn)
        z3 = self.filter(z1, graph)
        return {"z1": z1, "logits": h, "probs": torch.sigmoid(self.alpha * h), "recon": self.decoder(z3),
                "a_hat": graph.a_hat}
