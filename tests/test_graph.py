"""graph.py: the batch k-NN graph and the five spectral filters, each checked against a small dense reference
computed another way (numpy matrix polynomials, eigh, scipy's B-splines), plus the degenerate batches that break
eigendecomposition-based filters (identical items, one or two items, disconnected graphs)."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from numpy.polynomial import chebyshev
from scipy.interpolate import BSpline

import graph
from graph import (FILTERS, ChebyFilter, FourierFilter, LanczosFilter, SplineFilter, batch_adjacency, batch_graph,
                   bspline_basis, knn_adjacency, knn_graph, knn_recall, lanczos, normalised_graph)


def random_graph(n: int, knn: int, seed: int = 0, dim: int = 5):
    gen = torch.Generator().manual_seed(seed)
    return batch_graph(torch.randn(n, dim, generator=gen, dtype=torch.float64), knn)


def identity_w3(module: torch.nn.Module) -> None:
    """W3 = I, bias 0: the filter's output is then g(Lap) Z itself."""
    with torch.no_grad():
        module.w3.weight.copy_(torch.eye(module.w3.weight.shape[0], dtype=module.w3.weight.dtype))
        module.w3.bias.zero_()


# ----------------------------------------------------------------------------- the graph

@pytest.mark.parametrize("knn", [1, 3, 5])
def test_knn_adjacency_symmetric_no_self_loops_at_least_knn_neighbours(knn):
    feats = torch.randn(12, 4, generator=torch.Generator().manual_seed(knn))
    adj = knn_adjacency(feats, knn)
    assert torch.equal(adj, adj.T) and torch.all(adj.diagonal() == 0)
    assert set(adj.unique().tolist()) <= {0.0, 1.0}
    assert torch.all(adj.sum(1) >= knn)
    # each row's own knn most cosine-similar rows are its neighbours
    unit = torch.nn.functional.normalize(feats, dim=1)
    sim = unit @ unit.T
    sim.fill_diagonal_(-2)
    for i in range(12):
        assert torch.all(adj[i, sim[i].topk(knn).indices] == 1)


def brute_force_knn(X: np.ndarray, k: int) -> np.ndarray:
    unit = X / np.linalg.norm(X, axis=1, keepdims=True)
    sim = unit @ unit.T
    np.fill_diagonal(sim, -np.inf)
    return np.argsort(-sim, axis=1, kind="stable")[:, :k]


@pytest.mark.parametrize("n, k", [(50, 1), (300, 7), (1000, 20)])
def test_faiss_knn_graph_equals_brute_force(n, k):
    X = np.random.default_rng(n).normal(size=(n, 12)).astype(np.float32)
    got = knn_graph(X, k)
    assert got.shape == (n, k) and got.dtype == np.int64
    want = brute_force_knn(X.astype(np.float64), k)
    unit = X.astype(np.float64) / np.linalg.norm(X, axis=1, keepdims=True)
    rows = np.arange(n)[:, None]
    got_sim, want_sim = (unit[rows] * unit[got]).sum(-1), (unit[rows] * unit[want]).sum(-1)
    np.testing.assert_allclose(got_sim, want_sim, atol=1e-5)      # the same similarities at every rank
    near_tie = np.zeros_like(want, dtype=bool)                     # float32 may swap neighbours closer than that
    near_tie[:, 1:] |= np.diff(want_sim, axis=1) > -1e-5
    near_tie[:, :-1] |= near_tie[:, 1:].copy()
    assert (got == want)[~near_tie].all() and (got == want).mean() > 0.99


def test_knn_graph_never_lists_a_row_as_its_own_neighbour_even_with_duplicates():
    X = np.random.default_rng(0).normal(size=(40, 5)).astype(np.float32)
    X[20:] = X[:20]                       # every row has an exact twin: both rank first for each other
    got = knn_graph(X, 3)
    assert not (got == np.arange(40)[:, None]).any()
    np.testing.assert_array_equal(got[:20, 0], np.arange(20, 40))
    np.testing.assert_array_equal(got[20:, 0], np.arange(20))


def test_approximate_index_reaches_its_recall_and_exact_has_recall_one():
    """Above exact_max rows the graph comes from the HNSW graph of a PCA (16 of 64 dimensions), its candidates
    re-ranked by the full cosine from 8-bit codes: on clustered data its measured recall@10 against exact search is
    at least 0.9 (the figure the README states), each list is sorted by the full cosine, and the exact graph's
    recall is 1."""
    rng = np.random.default_rng(0)
    basis = np.linalg.qr(rng.normal(size=(64, 12)))[0].T
    centres = rng.normal(size=(30, 12))
    X = ((centres[rng.integers(0, 30, 6000)] + 0.5 * rng.normal(size=(6000, 12))) @ basis
         + 0.05 * rng.normal(size=(6000, 64))).astype(np.float32)
    approx = knn_graph(X, 10, exact_max=1000, dims=16)
    recall = knn_recall(X, approx, sample=500)
    assert 0.9 <= recall < 1.0 + 1e-9, recall
    unit = X / np.linalg.norm(X, axis=1, keepdims=True)
    sims = np.einsum("nd,nkd->nk", unit, unit[approx])
    assert (np.diff(sims, axis=1) <= 1e-2).all()
    assert knn_recall(X, knn_graph(X, 10), sample=500) == 1.0


class SlicesOnly:
    """A row source that allows only what knn_graph promises to use: len, shape and contiguous slices."""

    def __init__(self, X: np.ndarray):
        self.X = X
        self.shape = X.shape

    def __len__(self) -> int:
        return len(self.X)

    def __getitem__(self, key):
        assert isinstance(key, slice) and key.step is None, key
        return self.X[key]


@pytest.mark.parametrize("exact_max", [10_000, 500])
def test_chunked_input_gives_the_in_memory_graph(tmp_path, monkeypatch, exact_max):
    """A float16 memmap and a slices-only row source, read in chunks of 97 rows, give the graph of the same values
    held in memory as float32, on the exact path and on the HNSW path (exact_max = 500 < 1200 rows)."""
    import graph
    rng = np.random.default_rng(3)
    centres = rng.normal(size=(12, 24))
    X = (centres[rng.integers(0, 12, 1200)] + 0.6 * rng.normal(size=(1200, 24))).astype(np.float16)
    np.save(tmp_path / "X.npy", X)
    want = knn_graph(X.astype(np.float32), 8, exact_max=exact_max)
    monkeypatch.setattr(graph, "ROW_CHUNK", 97)
    monkeypatch.setattr(graph, "QUERY_CHUNK", 300)
    np.testing.assert_array_equal(knn_graph(np.load(tmp_path / "X.npy", mmap_mode="r"), 8, exact_max=exact_max), want)
    np.testing.assert_array_equal(knn_graph(SlicesOnly(X), 8, exact_max=exact_max), want)
    assert knn_recall(SlicesOnly(X), want, sample=200) == (1.0 if exact_max > 1200 else knn_recall(X, want, 200))


def test_batch_adjacency_is_the_global_graph_restricted_to_the_batch():
    """A hand-made graph on 6 items and a batch that repeats item 4: edges are kept when either end lists the
    other, dropped when the neighbour is outside the batch, and the two copies of item 4 are linked."""
    neighbours = torch.tensor([[1, 5], [0, 2], [3, 1], [2, 0], [5, 3], [4, 0]])
    idx = torch.tensor([0, 2, 4, 3, 4])
    want = torch.zeros(5, 5)
    for i, j in [(1, 3), (3, 0), (2, 3), (4, 3), (2, 4)]:   # 2~3, 3->0 (item 3 lists 0), 4->3, 4 twice
        want[i, j] = want[j, i] = 1
    torch.testing.assert_close(batch_adjacency(neighbours, idx), want)


def test_global_edges_give_the_similarity_target_of_the_hand_made_batch():
    """The loss's k-NN target S is the restricted global graph plus the diagonal (losses.similarity_target)."""
    from losses import similarity_target
    neighbours = torch.tensor([[1, 5], [0, 2], [3, 1], [2, 0], [5, 3], [4, 0]])
    idx = torch.tensor([5, 1, 0, 3])
    s = similarity_target(torch.randn(4, 3), normalised_graph(batch_adjacency(neighbours, idx)).a_hat, "knn")
    want = torch.tensor([[1., 0, 1, 0],    # 5 ~ 0 (5 lists 0, 0 lists 5)
                         [0, 1, 1, 0],     # 1 ~ 0
                         [1, 1, 1, 1],     # 0 ~ 5, 1, 3 (3 lists 0)
                         [0, 0, 1, 1]])
    torch.testing.assert_close(s, want)


def test_diffusion_map_is_the_scaled_low_frequency_spectrum_and_reproducible():
    """Columns are eigenvectors of the sparse A_hat (checked against a dense eigh), scaled by eigenvalue^t and
    centred; two calls agree exactly."""
    from graph import diffusion_map, normalised_sparse_adjacency
    X = np.random.default_rng(0).normal(size=(300, 6)).astype(np.float32)
    nb = knn_graph(X, 8)
    coords = diffusion_map(nb, 5, t=2.0)
    assert coords.shape == (300, 5) and coords.dtype == np.float32
    np.testing.assert_array_equal(coords, diffusion_map(nb, 5, t=2.0))
    a_hat = normalised_sparse_adjacency(nb).toarray()
    np.testing.assert_allclose(a_hat, a_hat.T)
    lam, u = np.linalg.eigh(a_hat)
    lam, u = lam[::-1][1:6], u[:, ::-1][:, 1:6]
    want = u * lam ** 2
    want -= want.mean(axis=0)
    for j in range(5):                                   # equal up to the sign of each eigenvector
        np.testing.assert_allclose(np.abs(coords[:, j] @ want[:, j]) / (want[:, j] @ want[:, j]), 1.0, atol=1e-3)


def test_low_frequencies_are_the_top_nontrivial_eigenpairs_with_a_fixed_sign():
    """Eigenvalues descending and equal to a dense eigh's (the trivial eigenvalue 1 left out); each eigenvector is
    one of A_hat's, with its largest entry positive; scaling them by lam^t and centring is diffusion_map."""
    from graph import diffusion_coordinates, diffusion_map, graph_low_frequencies, normalised_sparse_adjacency
    X = np.random.default_rng(1).normal(size=(200, 5)).astype(np.float32)
    nb = knn_graph(X, 6)
    lam, u = graph_low_frequencies(nb, 4)
    a_hat = normalised_sparse_adjacency(nb).toarray()
    np.testing.assert_allclose(lam, np.linalg.eigvalsh(a_hat)[::-1][1:5], atol=1e-6)
    np.testing.assert_allclose(a_hat @ u, u * lam, atol=1e-5)
    assert (u[np.abs(u).argmax(axis=0), np.arange(4)] > 0).all()
    np.testing.assert_array_equal(diffusion_coordinates(lam, u, 3.0), diffusion_map(nb, 4, t=3.0))


def test_diffusion_coordinates_join_a_cluster_beyond_its_neighbours():
    """Two blobs on the sphere (cosine k-NN), nothing between them: opposite sides of one blob share no k-NN edge,
    yet their diffusion coordinates are closer to each other than to any item of the other blob."""
    from graph import diffusion_map
    rng = np.random.default_rng(0)
    X = np.vstack([[1, 0, 0] + 0.15 * rng.normal(size=(400, 3)), [0, 1, 0] + 0.15 * rng.normal(size=(400, 3))])
    nb = knn_graph(X, 10)
    assert (nb[:400] < 400).all() and (nb[400:] >= 400).all()   # two components: the exact case of the deflation
    side = X[:400, 2] / np.linalg.norm(X[:400], axis=1)
    left, right = np.argmin(side), np.argmax(side)
    c = diffusion_map(nb, 4, t=8.0)
    c = c / np.linalg.norm(c, axis=1, keepdims=True)
    assert right not in nb[left] and c[left] @ c[right] > (c[left] @ c[400:].T).max()


def test_knn_larger_than_batch_is_clipped():
    adj = knn_adjacency(torch.randn(4, 3), 10)
    assert torch.equal(adj, torch.ones(4, 4) - torch.eye(4))


def test_normalised_adjacency_and_laplacian():
    g = random_graph(15, 3)
    a_tilde = knn_adjacency(torch.randn(15, 5, generator=torch.Generator().manual_seed(0), dtype=torch.float64), 3)
    a_tilde = a_tilde + torch.eye(15, dtype=torch.float64)
    d = a_tilde.sum(1)
    torch.testing.assert_close(g.a_hat, a_tilde / torch.sqrt(d[:, None] * d[None, :]))
    assert torch.allclose(g.a_hat, g.a_hat.T) and torch.allclose(g.lap, g.lap.T)
    torch.testing.assert_close(g.lap, torch.eye(15, dtype=torch.float64) - g.a_hat)
    lam = torch.linalg.eigvalsh(g.lap)
    assert lam.min() > -1e-10 and lam.max() < 2
    lam_s, u = g.spectrum()
    torch.testing.assert_close(lam_s, lam.clamp(0, 2))
    assert torch.all(lam_s[1:] >= lam_s[:-1])  # ascending: low frequency first
    torch.testing.assert_close(u @ torch.diag(lam) @ u.T, g.lap)


def test_no_gradient_through_graph_construction_or_eigh():
    x = torch.randn(10, 6, requires_grad=True)
    g = batch_graph(x * 2, 3)
    lam, u = g.spectrum()
    ritz, r = lanczos(g.lap, 4)
    for t in (g.a_hat, g.lap, lam, u, ritz, r):
        assert not t.requires_grad and t.grad_fn is None


# ----------------------------------------------------------------------------- spectral helpers

@pytest.mark.parametrize("n_basis", [4, 6, 9])
def test_bspline_basis_matches_scipy_and_partitions_unity(n_basis):
    x = torch.linspace(0, 2, 57, dtype=torch.float64)
    t = np.r_[[0.0] * 3, np.linspace(0, 2, n_basis - 2), [2.0] * 3]  # clamped uniform cubic knots on [0, 2]
    ref = BSpline.design_matrix(x.numpy(), t, 3).toarray()
    ours = bspline_basis(x, n_basis).numpy()
    np.testing.assert_allclose(ours, ref, atol=1e-12)
    np.testing.assert_allclose(ours.sum(1), 1.0, atol=1e-12)
    assert ours.min() >= 0


def test_bspline_basis_clamps_outside_the_interval():
    x = torch.tensor([-0.5, 0.0, 2.0, 2.5], dtype=torch.float64)
    b = bspline_basis(x, 6)
    torch.testing.assert_close(b[0], b[1])
    torch.testing.assert_close(b[3], b[2])


def test_lanczos_with_n_steps_gives_the_whole_spectrum():
    g = random_graph(8, 2, seed=1)
    lam = torch.linalg.eigvalsh(g.lap)
    assert torch.diff(lam).min() > 1e-6  # distinct eigenvalues: the Krylov space is the whole space
    ritz, r = lanczos(g.lap, 8)
    torch.testing.assert_close(ritz, lam, atol=1e-9, rtol=0)
    torch.testing.assert_close(r.T @ r, torch.eye(8, dtype=torch.float64), atol=1e-9, rtol=0)
    torch.testing.assert_close(r @ torch.diag(ritz) @ r.T, g.lap, atol=1e-9, rtol=0)


def test_lanczos_ritz_values_approach_the_extreme_eigenvalues():
    g = random_graph(60, 4, seed=2)
    lam = torch.linalg.eigvalsh(g.lap)
    errors = []
    for steps in (2, 4, 8, 16, 32):
        ritz, r = lanczos(g.lap, steps)
        assert len(ritz) == steps and r.shape == (60, steps)
        assert ritz.min() >= lam.min() - 1e-9 and ritz.max() <= lam.max() + 1e-9  # interlacing
        errors.append([float(ritz.min() - lam.min()), float(lam.max() - ritz.max())])
    errors = np.array(errors)
    assert np.all(np.diff(errors, axis=0) <= 1e-9), errors
    assert errors[-1].max() < 1e-3, errors


def test_lanczos_is_deterministic():
    g = random_graph(20, 3, seed=3)
    a, b = lanczos(g.lap, 5), lanczos(g.lap, 5)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_lanczos_stops_early_on_an_invariant_subspace(dtype):
    """Complete graph: Lap = I - J/n has eigenvalues {0, 1}, so the Krylov space has dimension 2 and beta = 0."""
    n = 7
    g = batch_graph(torch.randn(n, 3, dtype=dtype), n - 1)
    ritz, r = lanczos(g.lap, 5)
    assert torch.isfinite(ritz).all() and torch.isfinite(r).all()
    assert len(ritz) == 2 and r.shape == (n, 2)
    torch.testing.assert_close(ritz, torch.tensor([0.0, 1.0], dtype=dtype), atol=1e-5, rtol=0)


# ----------------------------------------------------------------------------- the filters against dense references

def test_cheby_recursion_equals_explicit_matrix_polynomials():
    n, h, order = 6, 3, 4
    g = random_graph(n, 2, seed=4)
    module = ChebyFilter(h, order).double()
    with torch.no_grad():
        module.theta.normal_(generator=torch.Generator().manual_seed(6))  # every order and channel weighs
    z = torch.randn(n, h, dtype=torch.float64, generator=torch.Generator().manual_seed(5))
    out = module(z, g).detach().numpy()
    l_s = g.lap.numpy() - np.eye(n)
    y = z.numpy() @ module.w3.weight.detach().numpy().T + module.w3.bias.detach().numpy()
    theta = module.theta.detach().numpy()
    ref = np.zeros((n, h))
    for k in range(order + 1):
        power = chebyshev.cheb2poly(np.eye(order + 1)[k])  # T_k in the monomial basis
        t_k = sum(c * np.linalg.matrix_power(l_s, j) for j, c in enumerate(power))
        ref += t_k @ y * theta[k]
    np.testing.assert_allclose(out, ref, atol=1e-10)


@pytest.mark.parametrize("cls", [FourierFilter, SplineFilter])
def test_fourier_and_spline_with_all_eigenvectors_and_unit_response_reproduce_the_input(cls):
    n, h = 9, 4
    module = cls(h, n).double()
    identity_w3(module)
    z = torch.randn(n, h, dtype=torch.float64)
    torch.testing.assert_close(module(z, random_graph(n, 3)), z)


def test_fourier_keeps_the_lowest_frequencies():
    n, h, order = 10, 3, 4
    g = random_graph(n, 3, seed=6)
    module = FourierFilter(h, order).double()
    identity_w3(module)
    with torch.no_grad():
        module.theta.copy_(torch.tensor([1.0, 2.0, 3.0, 4.0]))
    z = torch.randn(n, h, dtype=torch.float64)
    lam, u = np.linalg.eigh(g.lap.numpy())
    assert lam[order] - lam[order - 1] > 1e-6  # the K lowest eigenvectors span a well-defined space
    ref = u[:, :order] @ np.diag([1.0, 2.0, 3.0, 4.0]) @ u[:, :order].T @ z.numpy()
    np.testing.assert_allclose(module(z, g).detach().numpy(), ref, atol=1e-10)


def test_spline_response_is_the_bspline_of_the_eigenvalues():
    n, h, order = 10, 3, 5
    g = random_graph(n, 3, seed=6)
    module = SplineFilter(h, order).double()
    identity_w3(module)
    with torch.no_grad():
        module.coef.copy_(torch.linspace(2.0, -1.0, module.n_basis))
    lam, u = np.linalg.eigh(g.lap.numpy())
    assert lam[order] - lam[order - 1] > 1e-6  # the K lowest eigenvectors span a well-defined space
    t = np.r_[[0.0] * 3, np.linspace(0, 2, module.n_basis - 2), [2.0] * 3]
    theta = BSpline(t, module.coef.detach().numpy(), 3)(lam[:order])
    z = torch.randn(n, h, dtype=torch.float64)
    ref = u[:, :order] @ np.diag(theta) @ u[:, :order].T @ z.numpy()
    np.testing.assert_allclose(module(z, g).detach().numpy(), ref, atol=1e-10)


def test_lanczos_filter_with_n_steps_and_unit_response_reproduces_the_input():
    n, h = 8, 3
    module = LanczosFilter(h, n).double()
    identity_w3(module)
    z = torch.randn(n, h, dtype=torch.float64)
    torch.testing.assert_close(module(z, random_graph(n, 2, seed=1)), z)


def test_gcn_filter_is_layernorm_of_a_hat_z_w3():
    n, h = 7, 5
    g = random_graph(n, 2)
    module = FILTERS["gcn"](h, 4).double()
    z = torch.randn(n, h, dtype=torch.float64)
    ref = torch.nn.functional.layer_norm(g.a_hat @ module.w3(z), (h,), module.norm.weight, module.norm.bias)
    torch.testing.assert_close(module(z, g), ref)


# ----------------------------------------------------------------------------- degenerate batches

def degenerate_batches() -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    clusters = torch.cat([torch.randn(5, 6, generator=gen) + 20, torch.randn(5, 6, generator=gen) - 20])
    return {"identical": torch.ones(12, 6), "all_zero": torch.zeros(12, 6), "one_item": torch.randn(1, 6),
            "two_items": torch.randn(2, 6), "disconnected": clusters}


@pytest.mark.parametrize("task", list(FILTERS))
@pytest.mark.parametrize("batch", list(degenerate_batches()))
def test_filters_stay_finite_on_degenerate_batches(task, batch):
    x = degenerate_batches()[batch]
    g = batch_graph(x, 2)
    assert torch.isfinite(g.a_hat).all() and torch.isfinite(g.lap).all()
    module = FILTERS[task](8, 4)
    z = torch.randn(len(x), 8, requires_grad=True)
    out = module(z, g)
    out.square().sum().backward()
    assert out.shape == (len(x), 8) and torch.isfinite(out).all()
    assert torch.isfinite(z.grad).all() and all(torch.isfinite(p.grad).all() for p in module.parameters())


def test_disconnected_graph_has_one_zero_eigenvalue_per_component():
    x = degenerate_batches()["disconnected"]
    g = batch_graph(x, 2)
    assert torch.equal(g.a_hat[:5, 5:], torch.zeros(5, 5))
    lam, _ = g.spectrum()
    assert (lam < 1e-5).sum() == 2


def test_approximate_settings_name_the_hnsw_path_only_above_the_exact_limit():
    assert graph.approximate_settings(graph.EXACT_MAX_ROWS) is None
    above = graph.approximate_settings(graph.EXACT_MAX_ROWS + 1)
    assert f"pca{graph.PCA_DIMS}" in above and f"candidates{graph.CANDIDATES}" in above


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
@pytest.mark.parametrize("n", [128, graph.HOST_MAX_ROWS + 1])
def test_gpu_batch_spectrum_and_lanczos_match_the_cpu_and_stay_on_the_gpu(n):
    """On a GPU, small batches' eigenproblems run on the CPU (graph.on_host) and come back on the GPU; larger ones
    stay there. Either way: the CPU's eigenvalues and Ritz pairs, eigenvectors up to sign."""
    feats = torch.randn(n, 16, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    cpu, gpu = batch_graph(feats, 10), batch_graph(feats.cuda(), 10)
    (lam, u), (lam_g, u_g) = cpu.spectrum(), gpu.spectrum()
    assert lam_g.is_cuda and u_g.is_cuda
    assert torch.allclose(lam_g.cpu(), lam, atol=1e-8)
    low = slice(0, 4)  # distinct low frequencies: eigenvectors fixed up to sign
    assert torch.allclose((u_g.cpu()[:, low] * u[:, low]).sum(0).abs(), torch.ones(4, dtype=torch.float64), atol=1e-6)
    (ritz, r), (ritz_g, r_g) = lanczos(cpu.lap, 4), graph.on_host(lanczos, gpu.lap, 4)
    assert ritz_g.is_cuda and r_g.is_cuda
    assert torch.allclose(ritz_g.cpu(), ritz, atol=1e-8) and torch.allclose(r_g.cpu().abs(), r.abs(), atol=1e-6)
    basis = graph.on_host(bspline_basis, ritz_g, 6)
    assert basis.is_cuda and torch.allclose(basis.cpu(), bspline_basis(ritz, 6), atol=1e-8)
