"""Per-batch k-NN graphs and the five spectral graph filters of HAGCN.

The graph of a mini-batch is data, not a function to differentiate: it is built under no_grad, and so
is its eigendecomposition (eigh's backward is undefined for the repeated eigenvalues that k-NN graphs
with several components always have). Low graph frequency = small eigenvalue of Lap = I - A_hat.
To add a filter: subclass nn.Module with forward(z, graph) -> z3 and register it in FILTERS.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from typing import NamedTuple
from dataclasses import dataclass, field

import faiss
import numpy as np
import scipy.sparse as sp
import torch
import torch.nn as nn
import torch.nn.functional as F
from scipy.sparse.linalg import LinearOperator, eigsh


# ----------------------------------------------------------------------------- the batch graph

@torch.no_grad()
def knn_indices(feats: torch.Tensor, knn: int) -> torch.Tensor:
    """(n, knn) indices of each row's `knn` most cosine-similar other rows, for the rows of one batch (n x n)."""
    unit = F.normalize(feats.detach(), dim=1)
    sim = unit @ unit.T
    sim.fill_diagonal_(-math.inf)
    return sim.topk(knn, dim=1).indices


@torch.no_grad()
def knn_adjacency(feats: torch.Tensor, knn: int) -> torch.Tensor:
    """Symmetric 0/1 adjacency: each row's `knn` most cosine-similar rows (self excluded), then A = max(A, A^T)."""
    n = feats.shape[0]
    k = min(knn, n - 1)
    adj = torch.zeros(n, n, dtype=feats.dtype, device=feats.device)
    if k < 1:
        return adj
    adj.scatter_(1, knn_indices(feats, k), 1.0)
    return torch.maximum(adj, adj.T)


HOST_MAX_ROWS = 256  # rows up to which a GPU batch's spectral work runs on the CPU (README: On a GPU)


@torch.no_grad()
def on_host(fn: Callable, x: torch.Tensor, *args, max_rows: int = HOST_MAX_ROWS):
    """fn(x, *args), run on the CPU when x is a GPU tensor of at most `max_rows` rows, its tensor (or tuple of
    tensors) returned on x's device. A batch's eigenproblems and spline responses are strings of tiny kernels and host
    syncs: on an H200, cuSOLVER's eigh of a 128 x 128 Laplacian took 1.9 ms and 4 Lanczos steps 1.6 ms, against 1.2
    and 0.5 ms through the CPU (bench log results/bench/gpu_h200/eigh_host_vs_cuda.txt; the GPU wins from 512 rows)."""
    if x.device.type == "cpu" or x.shape[0] > max_rows:
        return fn(x, *args)
    out = fn(x.cpu(), *args)
    return out.to(x.device) if isinstance(out, torch.Tensor) else tuple(t.to(x.device) for t in out)


@dataclass
class BatchGraph:
    """A_hat = D^-1/2 (A + I) D^-1/2 and Lap = I - A_hat (eigenvalues in [0, 2)); the spectrum is computed once, on demand."""
    a_hat: torch.Tensor
    lap: torch.Tensor
    _spectrum: tuple[torch.Tensor, torch.Tensor] | None = field(default=None, repr=False)

    @property
    def n(self) -> int:
        return self.a_hat.shape[0]

    def spectrum(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Eigenvalues (ascending = low frequency first) and eigenvectors of Lap, without gradient."""
        if self._spectrum is None:
            lam, u = on_host(torch.linalg.eigh, self.lap)
            self._spectrum = (lam.clamp(0.0, 2.0), u)
        return self._spectrum


@torch.no_grad()
def normalised_graph(adj: torch.Tensor) -> BatchGraph:
    """A_hat = D^-1/2 (A + I) D^-1/2 of a symmetric adjacency without self-loops (0/1 or weighted), as data."""
    adj = adj.detach()
    eye = torch.eye(adj.shape[0], dtype=adj.dtype, device=adj.device)
    a_tilde = adj + eye
    d_inv_sqrt = a_tilde.sum(dim=1).rsqrt()
    a_hat = d_inv_sqrt[:, None] * a_tilde * d_inv_sqrt[None, :]
    return BatchGraph(a_hat, eye - a_hat)


@torch.no_grad()
def batch_graph(feats: torch.Tensor, knn: int) -> BatchGraph:
    """The normalised k-NN graph among the rows of one batch (the paper's batch graph), as data."""
    return normalised_graph(knn_adjacency(feats.detach(), knn))


# ----------------------------------------------------------------------------- the global neighbourhood graph
# The k-NN graph of the whole training split, computed once per fold: a batch of 128 out of 56,000 items sees only
# a sliver of it, so the batch graph's edges (and the similarity target) can come from it, restricted to the batch.

EXACT_MAX_ROWS = 300_000  # exact k-NN up to this many rows, an HNSW index above (bench/knn_graph.py measures both)
ROW_CHUNK = 65_536        # rows read from X, normalised and added at a time: bounds the float32 copies of X
QUERY_CHUNK = 131_072     # query rows searched at a time
RERANK_CHUNK = 512        # query rows whose candidates are ranked at a time (0.15 GB float32 at 100 x 768)
PCA_TRAIN_ROWS = 50_000   # seeded sample of rows that fits the PCA and the 8-bit quantiser's ranges
PCA_DIMS = 64             # dimensions of the rows in the HNSW graph (README: Neighbour graph at a million rows)
HNSW_M = 16               # links per row in the HNSW graph (32 on its lowest level)
HNSW_EF_CONSTRUCTION = 40  # candidate list while building the HNSW graph (faiss's default)
HNSW_EF_SEARCH = 64       # candidate list while searching it (bench/knn_graph.py --sweep chose it)
CANDIDATES = 24           # rows per row that the HNSW search proposes and the re-ranking sorts (at least k + 1)


def unit_rows(X: np.ndarray) -> np.ndarray:
    """float32 copy of X with rows scaled to unit length, so that inner product = cosine (zero rows stay zero)."""
    X = np.asarray(X, dtype=np.float32)
    norms = np.linalg.norm(X, axis=1, keepdims=True)
    return np.ascontiguousarray(X / np.maximum(norms, 1e-12))


def unit_chunks(X, chunk: int | None = None) -> Iterator[tuple[int, np.ndarray]]:
    """(start, unit rows of X[start:start + chunk]) over X, which is read only through len(X), X.shape and
    contiguous slices: an array, a float16 memmap or any object with those serves."""
    chunk = chunk or ROW_CHUNK
    for start in range(0, len(X), chunk):
        yield start, unit_rows(X[start:start + chunk])


def gathered_unit_rows(X, rows: np.ndarray) -> np.ndarray:
    """Unit rows X[rows] for sorted `rows`, collected chunk by chunk (X is read through contiguous slices only)."""
    parts = []
    for start, unit in unit_chunks(X):
        inside = rows[(rows >= start) & (rows < start + len(unit))]
        parts.append(unit[inside - start])
    return np.concatenate(parts)


def drop_self(found: np.ndarray, rows: np.ndarray, k: int) -> np.ndarray:
    """(len(rows), k) of the (len(rows), k + 1) neighbour lists `found` of `rows`, each without the row itself.
    A row absent from its own list (an exact duplicate ranked first, or an approximate index) loses its k+1-th."""
    if (found < 0).any():
        raise RuntimeError(f"the k-NN index returned fewer than {k + 1} neighbours; raise ef_search")
    keep = found != rows[:, None]
    keep[keep.all(axis=1), -1] = False
    return found[keep].reshape(len(rows), k)


def exact_search(X, queries: np.ndarray, k: int) -> np.ndarray:
    """(len(queries), k) int64: the k rows of X with the largest inner product with each unit query, nearest first,
    by brute force over X's chunks (faiss.knn per chunk, merged in a heap)."""
    heap = faiss.ResultHeap(len(queries), k, keep_max=True)
    for start, unit in unit_chunks(X):
        sims, found = faiss.knn(queries, unit, min(k, len(unit)), metric=faiss.METRIC_INNER_PRODUCT)
        heap.add_result(sims, found + start)
    heap.finalize()
    return heap.I


class ReducedIndex(NamedTuple):
    """The approximate path's three parts: a PCA of the unit rows to a few dimensions, an HNSW graph (L2) of the
    reduced rows that proposes candidates, and 8-bit codes of the full unit rows (n x d bytes) that rank them."""
    pca: faiss.PCAMatrix
    hnsw: faiss.IndexHNSWFlat
    sq: faiss.ScalarQuantizer
    codes: np.ndarray


def reduced_index(X, dims: int, seed: int = 0) -> ReducedIndex:
    """ReducedIndex of X's unit rows; the PCA and the quantiser's ranges fit on PCA_TRAIN_ROWS seeded rows. On
    unit rows |a - b|^2 = 2 - 2 cos, and the PCA keeps the largest part of it. The graph is built in one add on one
    thread (faiss's threaded HNSW build depends on thread timing), so the same X gives the same graph."""
    n, d = X.shape
    sample = np.sort(np.random.default_rng(seed).choice(n, min(n, PCA_TRAIN_ROWS), replace=False))
    train = gathered_unit_rows(X, sample)
    pca = faiss.PCAMatrix(d, min(dims, d))
    pca.train(train)
    sq = faiss.ScalarQuantizer(d, faiss.ScalarQuantizer.QT_8bit)
    sq.train(train)
    reduced = np.empty((n, pca.d_out), dtype=np.float32)
    codes = np.empty((n, sq.code_size), dtype=np.uint8)
    for start, unit in unit_chunks(X):
        reduced[start:start + len(unit)] = pca.apply(unit)
        codes[start:start + len(unit)] = sq.compute_codes(unit)
    hnsw = faiss.IndexHNSWFlat(pca.d_out, HNSW_M, faiss.METRIC_L2)
    hnsw.hnsw.efConstruction = HNSW_EF_CONSTRUCTION
    threads = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    hnsw.add(reduced)
    faiss.omp_set_num_threads(threads)
    return ReducedIndex(pca, hnsw, sq, codes)


def reranked(index: ReducedIndex, queries: np.ndarray, candidates: np.ndarray, k: int) -> np.ndarray:
    """(len(queries), k) of each query's candidate rows, sorted by their cosine with it in all d dimensions from
    the 8-bit codes, RERANK_CHUNK queries at a time; a missing candidate (-1) ranks last. The quantiser decodes
    code c to a + b c per dimension, so q . x = q . a + (q b) . c: one product with the codes, none decoded."""
    zero = np.zeros((2, index.sq.code_size), dtype=np.uint8)
    zero[1] = 1
    a, b = index.sq.decode(zero)
    b = torch.from_numpy(b - a)
    codes = torch.from_numpy(index.codes)
    out = np.empty((len(queries), k), dtype=np.int64)
    for start in range(0, len(queries), RERANK_CHUNK):
        cand = torch.from_numpy(candidates[start:start + RERANK_CHUNK])
        q = torch.from_numpy(queries[start:start + RERANK_CHUNK])
        rows = codes[cand.clamp(min=0).ravel()].view(*cand.shape, -1).float()
        sims = torch.bmm((q * b)[:, None, :], rows.transpose(1, 2))[:, 0] + (q @ torch.from_numpy(a))[:, None]
        sims[cand < 0] = -torch.inf
        order = torch.argsort(sims, dim=1, descending=True, stable=True)[:, :k]
        out[start:start + RERANK_CHUNK] = torch.take_along_dim(cand, order, dim=1).numpy()
    return out


def hnsw_knn_graph(X, k: int, dims: int, ef_search: int, candidates: int) -> np.ndarray:
    """(n, k) approximate k-NN graph from reduced_index: each row's max(candidates, k + 1) nearest rows in the HNSW
    graph of the reduced rows (QUERY_CHUNK rows searched at a time), re-ranked by their full-dimensional cosine."""
    index = reduced_index(X, dims)
    index.hnsw.hnsw.efSearch = ef_search
    out = np.empty((len(X), k), dtype=np.int64)
    for start, unit in unit_chunks(X, QUERY_CHUNK):
        _, found = index.hnsw.search(index.pca.apply(unit), min(max(candidates, k + 1), len(X)))
        out[start:start + len(unit)] = drop_self(reranked(index, unit, found, k + 1),
                                                 np.arange(start, start + len(unit)), k)
    return out


def knn_graph(X, k: int, exact_max: int = EXACT_MAX_ROWS, dims: int = PCA_DIMS, ef_search: int = HNSW_EF_SEARCH,
              candidates: int = CANDIDATES) -> np.ndarray:
    """(n, k) int64 indices of each row's k most cosine-similar other rows, nearest first (faiss; exact up to
    `exact_max` rows, above: hnsw_knn_graph, an HNSW graph of the rows' `dims`-dimensional PCA searched with
    `ef_search`, max(`candidates`, k + 1) candidates per row re-ranked in all dimensions).
    X is read through contiguous slices only (unit_chunks); faiss uses torch's thread count."""
    n = len(X)
    if not 1 <= k < n:
        raise ValueError(f"k = {k} neighbours need more than k rows, got {n}")
    faiss.omp_set_num_threads(torch.get_num_threads())
    if n > exact_max:
        return hnsw_knn_graph(X, k, dims, ef_search, candidates)
    rows = np.arange(n)
    return drop_self(exact_search(X, gathered_unit_rows(X, rows), k + 1), rows, k)


def approximate_settings(n: int) -> str | None:
    """What besides the rows and k decides knn_graph's result for n rows: None on the exact path, else the
    approximate path's settings (part of a cached graph's key, so a change of them rebuilds the graph)."""
    if n <= EXACT_MAX_ROWS:
        return None
    return f"pca{PCA_DIMS} hnsw{HNSW_M}/{HNSW_EF_CONSTRUCTION}/{HNSW_EF_SEARCH} candidates{CANDIDATES}"


def knn_recall(X, neighbours: np.ndarray, sample: int = 1000, seed: int = 0) -> float:
    """Recall of a k-NN graph against exact search, on `sample` seeded random rows: the mean fraction of each
    row's exact k nearest other rows that its list holds (exact: brute force over all rows, chunk by chunk)."""
    k = neighbours.shape[1]
    rows = np.sort(np.random.default_rng(seed).choice(len(X), min(sample, len(X)), replace=False))
    exact = drop_self(exact_search(X, gathered_unit_rows(X, rows), k + 1), rows, k)
    hits = (neighbours[rows][:, :, None] == exact[:, None, :]).any(axis=2)
    return float(hits.mean())


def normalised_sparse_adjacency(neighbours: np.ndarray) -> sp.csr_matrix:
    """A_hat = D^-1/2 (A + I) D^-1/2 of the symmetrised k-NN graph A = max(W, W^T), W_ij = 1 for j in N(i); sparse."""
    n, k = neighbours.shape
    W = sp.csr_matrix((np.ones(n * k), neighbours.ravel(), np.arange(0, n * k + 1, k)), shape=(n, n))
    A = ((W + W.T) > 0).astype(np.float64) + sp.eye(n)
    d_inv_sqrt = 1.0 / np.sqrt(np.asarray(A.sum(axis=1)).ravel())
    return (sp.diags(d_inv_sqrt) @ A @ sp.diags(d_inv_sqrt)).tocsr()


def graph_low_frequencies(neighbours: np.ndarray, dims: int) -> tuple[np.ndarray, np.ndarray]:
    """(lam (dims,), u (n, dims)): the top non-trivial eigenpairs of the global k-NN graph's A_hat (the lowest
    frequencies of Lap = I - A_hat), largest eigenvalue first, each eigenvector's sign fixed (its largest entry
    positive) rather than left to eigsh. The trivial eigenvector sqrt(degree) is deflated, so the result is exact
    when the graph has several components; the start vector is fixed, so it is reproducible."""
    a_hat = normalised_sparse_adjacency(neighbours)
    n = a_hat.shape[0]
    dims = min(dims, n - 2)
    trivial = 1.0 / np.sqrt(a_hat.diagonal())        # sqrt(degree), as A_hat_ii = 1 / d_i: the eigenvector of 1
    trivial /= np.linalg.norm(trivial)
    deflated = LinearOperator((n, n), matvec=lambda v: a_hat @ v - trivial * (trivial @ v), dtype=np.float64)
    lam, u = eigsh(deflated, k=dims, which="LA", v0=np.ones(n), tol=1e-6)
    order = np.argsort(lam)[::-1]
    u = u[:, order]
    return lam[order], u * np.sign(u[np.abs(u).argmax(axis=0), np.arange(dims)])


def diffusion_coordinates(lam: np.ndarray, u: np.ndarray, t: float) -> np.ndarray:
    """(n, dims) float32 diffusion coordinates u_i lam_i^t (eigenvalues clipped to [0, 1]), centred."""
    coords = u * np.clip(lam, 0.0, 1.0) ** t
    return np.ascontiguousarray(coords - coords.mean(axis=0), dtype=np.float32)


def diffusion_map(neighbours: np.ndarray, dims: int, t: float) -> np.ndarray:
    """(n, dims) float32 diffusion coordinates of the global k-NN graph (Coifman & Lafon 2006): the top non-trivial
    eigenvectors u_i of A_hat (graph_low_frequencies) scaled by their eigenvalue^t, centred.
    Their inner products are the low-pass kernel sum_i lam_i^2t u_i u_i^T ~ A_hat^2t: items joined by many short
    paths (one cluster of the manifold) get similar coordinates even when they are not each other's neighbours."""
    return diffusion_coordinates(*graph_low_frequencies(neighbours, dims), t)


@torch.no_grad()
def batch_adjacency(neighbours: torch.Tensor, idx: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """(B, B) 0/1 adjacency of the batch rows `idx` in the global k-NN graph `neighbours` (n, k): i ~ j when idx_j
    is among idx_i's neighbours or the reverse, or both are the same item (drawn twice); no self-loops."""
    nb = neighbours[idx]
    adj = (nb[:, :, None] == idx[None, None, :]).any(dim=1)
    adj = adj | adj.T | (idx[:, None] == idx[None, :])
    adj.fill_diagonal_(False)
    return adj.to(dtype)


# ----------------------------------------------------------------------------- spectral helpers

def bspline_basis(x: torch.Tensor, n_basis: int, degree: int = 3, lo: float = 0.0, hi: float = 2.0) -> torch.Tensor:
    """Clamped uniform B-spline basis on [lo, hi] evaluated at x: (len(x), n_basis), by the Cox-de Boor recursion."""
    n_inner = n_basis - degree + 1
    inner = torch.linspace(lo, hi, n_inner, dtype=x.dtype, device=x.device)
    t = torch.cat([inner[:1].repeat(degree), inner, inner[-1:].repeat(degree)])
    x = x.clamp(lo, hi)[:, None]
    # degree 0: indicator of [t_i, t_{i+1}); the last non-empty interval is closed so x = hi is covered
    b = ((x >= t[:-1]) & (x < t[1:])).to(x.dtype)
    last = int(torch.nonzero(t[1:] > t[:-1]).max())
    b[:, last] = b[:, last] + (x[:, 0] == hi).to(x.dtype)
    for p in range(1, degree + 1):
        left_den = t[p:-1] - t[:-p - 1]
        right_den = t[p + 1:] - t[1:-p]
        left = torch.where(left_den > 0, (x - t[:-p - 1]) / left_den.clamp_min(1e-12), torch.zeros_like(x)) * b[:, :-1]
        right = torch.where(right_den > 0, (t[p + 1:] - x) / right_den.clamp_min(1e-12), torch.zeros_like(x)) * b[:, 1:]
        b = left + right
    return b


@torch.no_grad()
def lanczos(lap: torch.Tensor, steps: int, tol: float = 1e-6) -> tuple[torch.Tensor, torch.Tensor]:
    """Ritz values and vectors of `steps` Lanczos iterations on a symmetric matrix, with full reorthogonalisation.

    The start vector is deterministic (a normalised ramp), never random, so two calls on the same batch agree.
    Stops early when beta ~ 0 (the Krylov space is invariant). Returns (theta (m,), R (n, m)), m <= steps.
    """
    n = lap.shape[0]
    q = torch.linspace(1.0, 2.0, n, dtype=lap.dtype, device=lap.device)
    basis = [q / q.norm()]
    alphas, betas = [], []
    for j in range(min(steps, n)):
        w = lap @ basis[j]
        alphas.append(torch.dot(basis[j], w))
        Q = torch.stack(basis, dim=1)
        for _ in range(2):  # classical Gram-Schmidt twice against every previous vector ("twice is enough")
            w = w - Q @ (Q.T @ w)
        beta = w.norm()
        if j + 1 == min(steps, n) or beta <= tol * max(1.0, float(alphas[-1].abs())):
            break
        betas.append(beta)
        basis.append(w / beta)
    m = len(alphas)
    T = torch.diag(torch.stack(alphas))
    if m > 1:
        off = torch.stack(betas[:m - 1])
        T = T + torch.diag(off, 1) + torch.diag(off, -1)
    theta, s = torch.linalg.eigh(T)
    return theta, torch.stack(basis[:m], dim=1) @ s


# ----------------------------------------------------------------------------- the five filters

class GCNFilter(nn.Module):
    """First-order GCN (Kipf & Welling 2017): Z3 = LayerNorm(A_hat Z W3)."""

    def __init__(self, hidden: int, order: int):
        super().__init__()
        self.w3 = nn.Linear(hidden, hidden)
        self.norm = nn.LayerNorm(hidden)

    def forward(self, z: torch.Tensor, graph: BatchGraph) -> torch.Tensor:
        return self.norm(graph.a_hat @ self.w3(z))


class FourierFilter(nn.Module):
    """Spectral filter on the K lowest graph frequencies (Bruna et al. 2014): Z3 = U_K diag(theta) U_K^T Z W3."""

    def __init__(self, hidden: int, order: int):
        super().__init__()
        self.order = order
        self.theta = nn.Parameter(torch.ones(order))
        self.w3 = nn.Linear(hidden, hidden)

    def forward(self, z: torch.Tensor, graph: BatchGraph) -> torch.Tensor:
        _, u = graph.spectrum()
        k = min(self.order, graph.n)
        u_k = u[:, :k]
        return u_k @ (self.theta[:k, None] * (u_k.T @ self.w3(z)))


class SplineFilter(nn.Module):
    """The paper's "Poly" filter: theta(lam) = sum_j c_j B_j(lam), a smooth cubic B-spline response on [0, 2],
    applied on the K lowest graph frequencies: Z3 = U_K diag(theta(lam_K)) U_K^T Z W3."""

    def __init__(self, hidden: int, order: int, n_basis: int = 6):
        super().__init__()
        self.order = order
        self.n_basis = n_basis
        self.coef = nn.Parameter(torch.ones(n_basis))   # B-splines sum to one: theta == 1 at initialisation
        self.w3 = nn.Linear(hidden, hidden)

    def forward(self, z: torch.Tensor, graph: BatchGraph) -> torch.Tensor:
        lam, u = graph.spectrum()
        k = min(self.order, graph.n)
        theta = on_host(bspline_basis, lam[:k], self.n_basis) @ self.coef
        u_k = u[:, :k]
        return u_k @ (theta[:, None] * (u_k.T @ self.w3(z)))


class ChebyFilter(nn.Module):
    """Chebyshev filter of order K (Defferrard et al. 2016): Z3 = sum_{k=0..K} T_k(L_s) Y diag(theta_k), Y = Z W3,
    L_s = Lap - I, i.e. SPEC's sum_k T_k(L_s) Z W3_k with W3_k = W3 diag(theta_k) (a learnable response per
    channel and order). One h x h weight instead of K+1 keeps its cost at GCN's (measured in bench/epoch_times.py).

    Recurs on the signals, T_k = 2 L_s T_{k-1} - T_{k-2}, never forming matrix powers. theta starts as
    (1, 0, .., 0): the all-pass filter, from which the response is learnt.
    """

    def __init__(self, hidden: int, order: int):
        super().__init__()
        self.order = order
        self.w3 = nn.Linear(hidden, hidden)
        self.theta = nn.Parameter(torch.eye(order + 1, hidden))

    def forward(self, z: torch.Tensor, graph: BatchGraph) -> torch.Tensor:
        l_s = -graph.a_hat  # Lap - I = 2 Lap / lam_max - I with lam_max = 2
        t_prev = self.w3(z)
        t = l_s @ t_prev
        out = t_prev * self.theta[0] + t * self.theta[1]
        for k in range(2, self.order + 1):
            t_prev, t = t, 2 * (l_s @ t) - t_prev
            out = out + t * self.theta[k]
        return out


class LanczosFilter(nn.Module):
    """LanczosNet-style filter (Liao et al. 2019): K Lanczos steps on Lap give Ritz pairs (theta_i, R);
    Z3 = R diag(g(theta)) R^T Z W3 with g a learnable cubic B-spline response on [0, 2]."""

    def __init__(self, hidden: int, order: int, n_basis: int = 6):
        super().__init__()
        self.order = order
        self.n_basis = n_basis
        self.coef = nn.Parameter(torch.ones(n_basis))
        self.w3 = nn.Linear(hidden, hidden)

    def forward(self, z: torch.Tensor, graph: BatchGraph) -> torch.Tensor:
        ritz, r = on_host(lanczos, graph.lap, self.order)
        response = on_host(bspline_basis, ritz, self.n_basis) @ self.coef
        return r @ (response[:, None] * (r.T @ self.w3(z)))


class IdentityFilter(nn.Module):
    """The ablation without a graph: Z3 = Z W3 (every graph frequency passed unchanged, no neighbour mixing)."""

    def __init__(self, hidden: int, order: int):
        super().__init__()
        self.w3 = nn.Linear(hidden, hidden)

    def forward(self, z: torch.Tensor, graph: BatchGraph) -> torch.Tensor:
        return self.w3(z)


FILTERS: dict[str, type[nn.Module]] = {
    "identity": IdentityFilter,
    "gcn": GCNFilter,
    "fourier": FourierFilter,
    "spline": SplineFilter,
    "cheby": ChebyFilter,
    "lanczos": LanczosFilter,
}
