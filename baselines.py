"""Hashing baselines, trained and evaluated on the same embeddings, splits and metric as HAGCN.

Unsupervised closed-form methods: LSH, PCAH, ITQ, SH and AGH. Each is a small class whose `fit(X, n_bits, seed)` sees
the (standardised) training split only and whose `encode(X)` turns any split into (n, n_bits) uint8 {0,1} bits.
`CLOSED_FORM` names them for the CLI and `fit_encode` runs one end to end. Deep methods (Bi-half, DSH,
HashNet, SHC) are a module from model.py plus a loss from losses.py, trained by the one loop in train.py: `DEEP`.
"""
from __future__ import annotations

from functools import partial

import faiss
import numpy as np

import losses
import model

# -----------------------------------------------------------------------------
# shared linear algebra


def _pca(X: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Training mean (d,) and the top-k principal directions (d, k), by decreasing variance.
    Directions come from eigh of the d x d covariance (cheap for large n); each is signed so that its largest
    loading is positive, which makes the codes independent of the sign LAPACK happens to return."""
    n, d = X.shape
    if not 1 <= k <= min(n, d):
        raise ValueError(f"n_bits={k} principal components requested, but at most min(n, d) = {min(n, d)} exist "
                         f"for {n} training items of dimension {d}")
    mean = X.mean(axis=0, dtype=np.float64)
    Xc = X - mean
    _, vecs = np.linalg.eigh(Xc.T @ Xc / n)  # eigenvalues ascending
    W = vecs[:, ::-1][:, :k]
    return mean, W * np.sign(W[np.abs(W).argmax(axis=0), np.arange(k)])


def _random_rotation(k: int, rng: np.random.Generator) -> np.ndarray:
    """Uniformly random k x k orthogonal matrix: QR of a Gaussian matrix, signs fixed by diag(R) (Mezzadri 2007)."""
    Q, R = np.linalg.qr(rng.standard_normal((k, k)))
    return Q * np.sign(np.diag(R))


# -----------------------------------------------------------------------------
# unsupervised closed-form methods


class LinearHash:
    """Codes that are the sign of a linear projection of centred data: bit = (X - mean) W > 0."""
    mean: np.ndarray
    W: np.ndarray

    def encode(self, X: np.ndarray) -> np.ndarray:
        return ((X - self.mean) @ self.W > 0).astype(np.uint8)


class LSH(LinearHash):
    """Locality-sensitive hashing by random hyperplanes (Charikar, STOC 2002) on data centred with the training mean."""

    def fit(self, X: np.ndarray, n_bits: int, seed: int) -> LSH:
        self.mean = X.mean(axis=0, dtype=np.float64)
        self.W = np.random.default_rng(seed).standard_normal((X.shape[1], n_bits))
        return self


class PCAH(LinearHash):
    """PCA hashing (Wang, Kumar & Chang, CVPR 2010): sign of the top n_bits principal components."""

    def fit(self, X: np.ndarray, n_bits: int, seed: int) -> PCAH:
        self.mean, self.W = _pca(X, n_bits)
        return self


class ITQ(LinearHash):
    """Iterative quantization (Gong & Lazebnik, CVPR 2011): PCA, then the rotation R minimising ||B - V R||_F^2."""

    def __init__(self, n_iter: int = 50):
        self.n_iter = n_iter

    def fit(self, X: np.ndarray, n_bits: int, seed: int) -> ITQ:
        self.mean, P = _pca(X, n_bits)
        V = (X - self.mean) @ P
        R = _random_rotation(n_bits, np.random.default_rng(seed))
        self.losses = []
        for _ in range(self.n_iter):
            B = np.where(V @ R > 0, 1.0, -1.0)  # best B for fixed R
            # best R for fixed B (orthogonal Procrustes): max_R tr(R^T V^T B); with V^T B = U S Wt it is R = U Wt
            U, _, Wt = np.linalg.svd(V.T @ B)
            R = U @ Wt
            self.losses.append(float(np.sum((B - V @ R) ** 2)))
        self.R, self.W = R, P @ R
        return self


class SH:
    """Spectral hashing (Weiss, Torralba & Fergus, NIPS 2008): thresholded 1-D Laplacian eigenfunctions along PCA axes.
    Each PCA coordinate is modelled as uniform on its training range [a, b]; there the eigenfunctions are
    sin(pi/2 + k pi (x - a) / (b - a)) with eigenvalue lambda_k = 1 - exp(-eps^2/2 w^2), w = k pi / (b - a).
    lambda_k is increasing in w^2 for every eps, so the candidates (dimension, mode k >= 1) are ranked by w^2,
    stored in `eigenvalues` (the Laplacian eigenvalues, eps -> 0 limit up to scale); the n_bits smallest become bits."""

    def fit(self, X: np.ndarray, n_bits: int, seed: int) -> SH:
        self.mean, self.W = _pca(X, min(n_bits, *X.shape))
        V = (X - self.mean) @ self.W
        self.lo = V.min(axis=0)
        span = np.maximum(V.max(axis=0) - self.lo, np.finfo(np.float64).eps)  # a constant axis: huge w, never chosen
        modes = np.arange(1, n_bits + 1)  # one axis alone may have to supply every bit
        omega2 = (modes[None, :] * np.pi / span[:, None]) ** 2  # (n_pca, n_bits) candidate eigenvalues
        chosen = np.argsort(omega2, axis=None, kind="stable")[:n_bits]
        dims, k = np.unravel_index(chosen, omega2.shape)
        self.modes = np.stack([dims, modes[k]], axis=1)  # (n_bits, 2): (PCA dimension, mode k)
        self.eigenvalues = omega2[dims, k]
        self.freq = modes[k] * np.pi / span[dims]
        return self

    def encode(self, X: np.ndarray) -> np.ndarray:
        V = (X - self.mean) @ self.W
        dims = self.modes[:, 0]
        return (np.sin(np.pi / 2 + self.freq * (V[:, dims] - self.lo[dims])) > 0).astype(np.uint8)


class AGH:
    """Anchor graph hashing (Liu, Wang, Kumar & Chang, ICML 2011), one layer.

    m anchors U by k-means on the training split; each item x links to its s nearest anchors with weights
    z(x)_j = exp(-||x - u_j||^2 / t) normalised to sum 1 (t: the mean squared distance to the s-th nearest anchor),
    so Z (n x m) defines the anchor graph A = Z Lambda^-1 Z^T, Lambda = diag(Z^T 1). Its top eigenvectors come from
    the m x m matrix M = Lambda^-1/2 Z^T Z Lambda^-1/2 = V Sigma V^T: with the trivial pair (sigma = 1, the constant
    code) deflated,
    W = sqrt(n) Lambda^-1/2 V_r Sigma_r^-1/2 (eq. 9 of the paper) and the code of any item, seen or new, is
    sign(z(x) W): inductive, from x and the anchors alone."""

    def __init__(self, n_anchors: int = 300, n_nearest: int = 3):
        self.n_anchors, self.n_nearest = n_anchors, n_nearest

    def fit(self, X: np.ndarray, n_bits: int, seed: int) -> AGH:
        X = np.ascontiguousarray(X, dtype=np.float32)
        m = min(self.n_anchors, len(X))
        if not 1 <= n_bits < m:
            raise ValueError(f"AGH: {n_bits} bits need more than {n_bits} anchors, got {m} (training items: {len(X)})")
        kmeans = faiss.Kmeans(X.shape[1], m, niter=20, seed=seed, max_points_per_centroid=1000)
        kmeans.train(X)
        self.anchors = kmeans.centroids
        dist, _ = self.nearest_anchors(X)
        self.bandwidth = float(dist[:, -1].mean()) or 1.0
        Z = self.anchor_weights(X)
        lam = Z.sum(axis=0)                                             # Lambda = diag(Z^T 1)
        scale = 1.0 / np.sqrt(np.maximum(lam, 1e-12))
        M = scale[:, None] * (Z.T @ Z) * scale[None, :]
        trivial = np.sqrt(lam) / np.linalg.norm(np.sqrt(lam))          # M's eigenvector of the constant code, sigma 1
        sigma, V = np.linalg.eigh(M - np.outer(trivial, trivial))       # deflated: exact even with several components
        sigma, V = sigma[::-1][:n_bits], V[:, ::-1][:, :n_bits]
        V = V * np.sign(V[np.abs(V).argmax(axis=0), np.arange(n_bits)])  # signs fixed: codes independent of LAPACK
        self.W = np.sqrt(len(X)) * scale[:, None] * V / np.sqrt(np.maximum(sigma, 1e-12))
        return self

    def nearest_anchors(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Squared distances (n, s) and indices (n, s) of each row's s nearest anchors (exact, faiss)."""
        index = faiss.IndexFlatL2(self.anchors.shape[1])
        index.add(self.anchors)
        return index.search(np.ascontiguousarray(X, dtype=np.float32), min(self.n_nearest, len(self.anchors)))

    def anchor_weights(self, X: np.ndarray) -> np.ndarray:
        """Z (n, m): kernel weights to the s nearest anchors, each row summing to 1 (dense; m is small)."""
        dist, idx = self.nearest_anchors(X)
        dist = dist.astype(np.float64)
        w = np.exp(-(dist - dist[:, :1]) / self.bandwidth)             # shifted by the nearest: same after normalising
        Z = np.zeros((len(X), len(self.anchors)), dtype=np.float64)
        np.put_along_axis(Z, idx, w / w.sum(axis=1, keepdims=True), axis=1)
        return Z

    def encode(self, X: np.ndarray) -> np.ndarray:
        return (self.anchor_weights(X) @ self.W > 0).astype(np.uint8)


CLOSED_FORM = {"lsh": LSH, "pcah": PCAH, "itq": ITQ, "sh": SH, "agh": AGH}
ONE_BIT_PER_COMPONENT = {"pcah", "itq"}  # at most d bits for d-dimensional features (see _pca)


def fit_encode(name: str, X_train: np.ndarray, X_query: np.ndarray, X_db: np.ndarray, n_bits: int,
               seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Fit closed-form method `name` on the training split; return the (query, database) bits."""
    coder = CLOSED_FORM[name]().fit(X_train, n_bits, seed)
    return coder.encode(X_query), coder.encode(X_db)


# ----------------------------------------------------------------------------- deep baselines (SPEC section 3)
# A deep baseline is a module (model.py: the shared MLP hash head, its forward and schedules) plus a loss
# (losses.py); main.fit_and_encode trains it with the one loop in train.py and encodes with codes(x) > 0.

SUPERVISED = {"dsh", "hashnet", "shc"}

DEEP = {
    # name: (module builder (d_in, hidden, bits, n_classes, seed), loss)
    "bihalf": (lambda d, h, b, c, s: model.BiHalf(d, h, b), partial(losses.bihalf_loss, gamma=1.0)),
    "dsh": (lambda d, h, b, c, s: model.DSH(d, h, b), partial(losses.dsh_loss, alpha=0.01)),
    "hashnet": (lambda d, h, b, c, s: model.HashNet(d, h, b), partial(losses.hashnet_loss)),
    "shc": (lambda d, h, b, c, s: model.SHC(d, h, b, c, seed=s), partial(losses.shc_loss, quant=0.1)),
}


def build_deep(method: str, d_in: int, bits: int, n_classes: int, args) -> tuple[model.HashModel, partial]:
    """(model, loss_fn) of a deep baseline; the MLP hash head is args.hidden wide, SHC is seeded with args.seed."""
    if method not in DEEP:
        raise ValueError(f"unknown deep baseline {method!r}; known: {', '.join(DEEP)}")
    make, loss_fn = DEEP[method]
    return make(d_in, args.hidden, bits, n_classes, args.seed), loss_fn
