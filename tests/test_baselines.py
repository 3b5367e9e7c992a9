"""Closed-form baselines (LSH, PCAH, ITQ, SH, AGH): each checked against the property that defines it, plus a retrieval
sanity check on scikit-learn's digits against an in-test numpy mAP@100."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import baselines  # noqa: E402

METHODS = sorted(baselines.CLOSED_FORM)


def anisotropic(n: int, d: int, seed: int = 0) -> np.ndarray:
    """Gaussian data with well separated variances (so principal directions are unique) and a non-zero mean."""
    rng = np.random.default_rng(seed)
    scales = np.linspace(3.0, 0.5, d)
    return (rng.standard_normal((n, d)) * scales + rng.standard_normal(d)).astype(np.float32)


def reference_pca(X: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Centred projections on the top-k principal directions, by SVD of the centred data (not the covariance)."""
    Xc = X.astype(np.float64) - X.mean(axis=0, dtype=np.float64)
    _, _, Vt = np.linalg.svd(Xc, full_matrices=False)
    return Xc @ Vt[:k].T, Vt[:k].T


def same_up_to_flips(a: np.ndarray, b: np.ndarray) -> bool:
    """Every column of a equals the same column of b, or its complement."""
    return bool(np.all(np.all(a == b, axis=0) | np.all(a != b, axis=0)))


@pytest.mark.parametrize("name", METHODS)
def test_codes_are_binary_and_seeded(name):
    X = anisotropic(400, 20)
    codes = baselines.CLOSED_FORM[name]().fit(X, 16, seed=3).encode(X[:50])
    assert codes.shape == (50, 16) and codes.dtype == np.uint8
    assert set(np.unique(codes)) <= {0, 1}
    again = baselines.CLOSED_FORM[name]().fit(X, 16, seed=3).encode(X[:50])
    np.testing.assert_array_equal(codes, again)


def test_fit_encode_uses_the_training_fit():
    X = anisotropic(300, 12)
    q, db = baselines.fit_encode("itq", X[:200], X[200:250], X[250:], 8, seed=0)
    model = baselines.ITQ().fit(X[:200], 8, seed=0)
    np.testing.assert_array_equal(q, model.encode(X[200:250]))
    np.testing.assert_array_equal(db, model.encode(X[250:]))


def test_lsh_balanced_reproducible_and_wider_than_d():
    rng = np.random.default_rng(1)
    X = rng.standard_normal((4000, 16)).astype(np.float32)
    model = baselines.LSH().fit(X, 64, seed=7)  # 64 bits from 16 dimensions
    codes = model.encode(X)
    assert codes.shape == (4000, 64)
    assert np.all(np.abs(codes.mean(axis=0) - 0.5) < 0.05)  # std of a bit's mean is 0.008
    np.testing.assert_array_equal(model.W, np.random.default_rng(7).standard_normal((16, 64)))
    assert not np.array_equal(codes, baselines.LSH().fit(X, 64, seed=8).encode(X))


def test_pcah_is_sign_of_top_principal_components():
    X = anisotropic(500, 10)
    proj, _ = reference_pca(X, 6)
    codes = baselines.PCAH().fit(X, 6, seed=0).encode(X)
    assert same_up_to_flips(codes, (proj > 0).astype(np.uint8))


def test_pcah_rejects_more_bits_than_components():
    X = anisotropic(50, 10)
    with pytest.raises(ValueError, match=r"n_bits=11.*min\(n, d\) = 10"):
        baselines.PCAH().fit(X, 11, seed=0)


def test_itq_rotation_orthogonal_and_loss_non_increasing():
    X = anisotropic(600, 24)
    model = baselines.ITQ().fit(X, 16, seed=0)
    np.testing.assert_allclose(model.R @ model.R.T, np.eye(16), atol=1e-6)
    losses = np.array(model.losses)
    assert len(losses) == 50
    assert np.all(np.diff(losses) <= 1e-9 * losses[0])
    assert losses[-1] < losses[0]  # the rotation does improve the quantisation
    V, P = reference_pca(X, 16)
    V = V * np.sign(np.sum(P * (model.W @ model.R.T), axis=0))  # align the reference PCA signs with the model's
    B = np.where(V @ model.R > 0, 1.0, -1.0)
    assert np.sum((B - V @ model.R) ** 2) <= losses[-1] * (1 + 1e-6)


def test_sh_picks_the_smallest_eigenvalues():
    X = anisotropic(800, 8)
    n_bits = 24
    model = baselines.SH().fit(X, n_bits, seed=0)
    proj, _ = reference_pca(X, 8)
    span = np.ptp(proj, axis=0)  # range is invariant to the sign of a component
    dims, modes = np.meshgrid(np.arange(8), np.arange(1, n_bits + 1), indexing="ij")
    candidates = (modes * np.pi / span[dims]) ** 2  # every (dimension, mode >= 1) eigenvalue
    chosen = candidates[model.modes[:, 0], model.modes[:, 1] - 1]
    np.testing.assert_allclose(chosen, model.eigenvalues, rtol=1e-6)
    np.testing.assert_allclose(np.sort(chosen), np.sort(candidates, axis=None)[:n_bits], rtol=1e-6)
    assert len({tuple(m) for m in model.modes}) == n_bits
    assert model.modes[:, 1].max() > 1 and len(set(model.modes[:, 0])) > 1  # several modes and dimensions in play


def test_sh_first_mode_splits_the_range_in_half():
    """Mode 1, sin(pi/2 + pi (x - a) / (b - a)), is positive exactly on the lower half of [a, b]."""
    X = anisotropic(800, 8)
    model = baselines.SH().fit(X, 4, seed=0)
    assert tuple(model.modes[0]) == (0, 1)  # widest axis, first mode
    v = (X - model.mean) @ model.W[:, 0]
    np.testing.assert_array_equal(model.encode(X)[:, 0], (v < (v.min() + v.max()) / 2).astype(np.uint8))


def two_clusters(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 2
    return (rng.normal(size=(n, 10)) + 6.0 * y[:, None]).astype(np.float32), y


def test_agh_first_bit_separates_two_clusters_and_encodes_unseen_items():
    """The first non-trivial eigenvector of the anchor graph is its cut: one bit splits two clusters, for the
    training items and for new items encoded from their anchors alone."""
    X, y = two_clusters(600, seed=0)
    model = baselines.AGH(n_anchors=40, n_nearest=3).fit(X, 4, seed=0)
    X_new, y_new = two_clusters(200, seed=1)
    for data, labels in ((X, y), (X_new, y_new)):
        bit = model.encode(data)[:, 0]
        assert len(set(bit[labels == 0])) == 1 and len(set(bit[labels == 1])) == 1 and bit[0] != bit[1]
    np.testing.assert_array_equal(model.encode(X_new[:7]), model.encode(X_new)[:7])   # item by item


def test_agh_embedding_is_balanced_and_orthonormal_on_the_training_items():
    """Y = Z W solves the spectral problem with the constraints of the paper: 1^T Y = 0 and Y^T Y / n = I."""
    X = anisotropic(500, 8)
    model = baselines.AGH(n_anchors=50, n_nearest=3).fit(X, 6, seed=0)
    Z = model.anchor_weights(X)
    np.testing.assert_allclose(Z.sum(axis=1), 1.0)
    assert (np.count_nonzero(Z, axis=1) == 3).all()
    Y = Z @ model.W
    np.testing.assert_allclose(Y.sum(axis=0) / len(X), 0.0, atol=1e-8)
    np.testing.assert_allclose(Y.T @ Y / len(X), np.eye(6), atol=1e-8)


def test_agh_rejects_more_bits_than_anchors():
    with pytest.raises(ValueError, match="anchors"):
        baselines.AGH(n_anchors=10).fit(anisotropic(100, 4), 16, seed=0)


# -----------------------------------------------------------------------------
# retrieval sanity check on real data


def map_at_k(q_codes, db_codes, q_y, db_y, k: int) -> float:
    """mAP@k: label-equality relevance, stable Hamming ranking, AP over queries with at least one hit in the top k."""
    ham = (q_codes[:, None, :] != db_codes[None, :, :]).sum(axis=-1)
    rel = (db_y[np.argsort(ham, axis=1, kind="stable")[:, :k]] == q_y[:, None]).astype(np.float64)
    hits = rel.sum(axis=1)
    prec = np.cumsum(rel, axis=1) / np.arange(1, k + 1)
    keep = hits > 0
    return float(((prec * rel).sum(axis=1)[keep] / hits[keep]).mean())


@pytest.fixture(scope="module")
def digits_map():
    """mAP@100 of every method at 16/32/64 bits, and of random codes, on digits: query 20%, database the rest,
    training set = the database (the unsupervised protocol), standardised with training statistics."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split
    X, y = load_digits(return_X_y=True)
    db, q = train_test_split(np.arange(len(y)), test_size=0.2, random_state=0, stratify=y)
    mean, std = X[db].mean(axis=0), X[db].std(axis=0)
    X = ((X - mean) / np.where(std > 1e-8, std, 1.0)).astype(np.float32)
    table = {}
    for bits in (16, 32, 64):
        for name in METHODS:
            qb, dbb = baselines.fit_encode(name, X[db], X[q], X[db], bits, seed=0)
            table[name, bits] = map_at_k(qb, dbb, y[q], y[db], 100)
        rng = np.random.default_rng(0)
        table["random", bits] = map_at_k(rng.integers(0, 2, (len(q), bits)), rng.integers(0, 2, (len(db), bits)),
                                         y[q], y[db], 100)
    return table


def test_digits_retrieval_sanity(digits_map):
    for (name, bits), value in sorted(digits_map.items()):
        print(f"{name:>6} {bits:2d} bits  mAP@100 {value:.4f}")
    assert digits_map["itq", 32] > digits_map["lsh", 32]
    for bits in (16, 32, 64):
        for name in METHODS:
            assert digits_map[name, bits] > digits_map["random", bits] + 0.1, (name, bits)
