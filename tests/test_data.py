"""data.py: per-class .npy folders (class order, labels, (1, d) files, the cache and its invalidation), the built-in
datasets, one feature matrix with integer or multi-hot labels, Fashion-MNIST pairs (multi-label), the splits
(ref 80/10/10, standard q per class, folds, random for multi-label) and standardisation on training statistics only."""
from __future__ import annotations

import os

import numpy as np
import pytest

import data
from conftest import REPO, write_folder


def test_class_order_numeric_when_all_names_are_integers():
    assert data.sorted_class_names(["10", "2", "1", "0"]) == ["0", "1", "2", "10"]
    assert data.sorted_class_names(["10", "2", "b", "a"]) == ["10", "2", "a", "b"]


@pytest.mark.parametrize("names, order", [(["10", "2", "0", "1"], ["0", "1", "2", "10"]),
                                          (["cat", "ant", "bee"], ["ant", "bee", "cat"]),
                                          (["10", "9", "x"], ["10", "9", "x"])])
def test_folder_labels_follow_class_order(tmp_path, names, order):
    """Labels are 0..C-1 in the sorted class order (no off-by-one); each vector keeps its class."""
    classes = {name: [np.full(4, float(i), np.float32)] * (i + 1) for i, name in enumerate(names)}
    ds = data.load_folder(write_folder(tmp_path / "root", classes), use_cache=False)
    assert ds.classes == order
    assert sorted(set(ds.y.tolist())) == list(range(len(names)))
    for label, name in enumerate(order):
        i = names.index(name)
        rows = ds.y == label
        assert rows.sum() == i + 1 and np.all(ds.X[rows] == float(i))
    assert ds.X.dtype == np.float32 and ds.X.flags.c_contiguous and ds.y.dtype == np.int64


def test_one_by_d_files_are_accepted_and_mixed_with_d(tmp_path):
    root = write_folder(tmp_path / "root", {"a": [np.arange(5.0)[None, :]], "b": [np.arange(5.0) + 1]})
    ds = data.load_folder(root, use_cache=False)
    assert ds.X.shape == (2, 5)
    np.testing.assert_array_equal(ds.X[0], np.arange(5.0))
    assert ds.items == [os.path.join("a", "item_0000.npy"), os.path.join("b", "item_0000.npy")]


def test_non_npy_files_ignored_with_a_warning(tmp_path, capsys):
    root = write_folder(tmp_path / "root", {"a": [np.ones(3)], "b": [np.zeros(3)]})
    (root / "a" / "readme.txt").write_text("x")
    (root / "b" / "thumbs.db").write_bytes(b"x")
    ds = data.load_folder(root, use_cache=False)
    assert len(ds.y) == 2
    assert "ignored 2 non-.npy" in capsys.readouterr().err


def test_cache_is_written_next_to_the_folder_and_reused(tmp_path, monkeypatch):
    root = write_folder(tmp_path / "root", {"a": [np.ones(3)] * 2, "b": [np.zeros(3)] * 2})
    first = data.load_folder(root)
    cache = tmp_path / ".root.hagcn-cache.npz"
    assert cache.is_file() and data.cache_path(root) == cache
    assert not list(tmp_path.glob("*.tmp*"))
    monkeypatch.setattr(data, "read_vector", lambda p: pytest.fail("the cache was not used"))
    second = data.load_folder(root)
    np.testing.assert_array_equal(first.X, second.X)
    np.testing.assert_array_equal(first.y, second.y)
    assert second.classes == first.classes and second.items == first.items


def test_cache_invalidated_when_a_file_changes_is_added_or_removed(tmp_path):
    root = write_folder(tmp_path / "root", {"a": [np.ones(3)] * 2, "b": [np.zeros(3)] * 2})
    data.load_folder(root)
    target = root / "a" / "item_0001.npy"
    stat = target.stat()
    np.save(target, np.full(3, 7.0))  # same size, new content
    os.utime(target, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))  # a later edit (mtime ticks can be coarse)
    assert data.load_folder(root).X[1].tolist() == [7.0, 7.0, 7.0]
    np.save(root / "b" / "item_0009.npy", np.full(3, 5.0))
    assert len(data.load_folder(root).y) == 5
    (root / "a" / "item_0000.npy").unlink()
    ds = data.load_folder(root)
    assert len(ds.y) == 4 and ds.X[0].tolist() == [7.0, 7.0, 7.0]


def test_corrupt_cache_is_rebuilt(tmp_path):
    root = write_folder(tmp_path / "root", {"a": [np.ones(3)] * 2, "b": [np.zeros(3)] * 2})
    data.cache_path(root).write_bytes(b"garbage")
    assert data.load_folder(root).X.shape == (4, 3)
    assert data.load_folder(root).X.shape == (4, 3)


def test_sample_folder_in_the_repo_loads():
    ds = data.load_folder(REPO / "data" / "digits_sample", use_cache=False)
    assert ds.classes == [str(c) for c in range(10)] and ds.X.shape[1] == 64
    assert np.bincount(ds.y).min() > 0


def test_builtin_digits():
    ds = data.load_dataset("digits")
    assert ds.X.shape == (1797, 64) and ds.X.dtype == np.float32 and set(ds.y.tolist()) == set(range(10))


def test_fashion_mnist_idx_reader(tmp_path):
    """IDX: magic 0 0 8 ndim, big-endian sizes, uint8 data; bad or truncated files are one-line data errors."""
    import gzip
    images = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    header = bytes([0, 0, 8, 3]) + b"".join(int(s).to_bytes(4, "big") for s in images.shape)
    for prefix, labels in (("train", [3, 1]), ("t10k", [0, 9])):
        (tmp_path / f"{prefix}-images-idx3-ubyte.gz").write_bytes(gzip.compress(header + images.tobytes()))
        lab = bytes([0, 0, 8, 1]) + (2).to_bytes(4, "big") + bytes(labels)
        (tmp_path / f"{prefix}-labels-idx1-ubyte.gz").write_bytes(gzip.compress(lab))
    ds = data.load_fashion_mnist(tmp_path)
    assert ds.X.shape == (4, 12) and ds.y.tolist() == [3, 1, 0, 9]
    np.testing.assert_allclose(ds.X[1], images[1].ravel() / 255.0, rtol=1e-6)
    whole = gzip.compress(header + images.tobytes())
    for bad, why in ((whole[:-6], "cannot read"), (b"plain bytes", "cannot read"),
                     (gzip.compress(header + images.tobytes()[:-1]), "truncated")):
        (tmp_path / "t10k-images-idx3-ubyte.gz").write_bytes(bad)
        with pytest.raises(data.DataError, match=why):
            data.load_fashion_mnist(tmp_path)
    with pytest.raises(data.DataError, match="apt-get install dataset-fashion-mnist"):
        data.load_fashion_mnist(tmp_path / "nowhere")


@pytest.mark.skipif(not (data.FASHION_MNIST_DIR / "t10k-labels-idx1-ubyte.gz").is_file(),
                    reason="Debian's dataset-fashion-mnist is not installed")
def test_fashion_mnist_test_labels_are_balanced():
    labels = data.read_idx(data.FASHION_MNIST_DIR / "t10k-labels-idx1-ubyte.gz")
    assert labels.shape == (10000,) and np.bincount(labels).tolist() == [1000] * 10


def test_subsample_is_stratified_and_seeded():
    a = data.load_dataset("digits", subsample=200, seed=3)
    b = data.load_dataset("digits", subsample=200, seed=3)
    assert len(a.y) == 200 and np.array_equal(a.X, b.X)
    assert np.bincount(a.y).min() >= 18


def test_ref_split_sizes_disjoint_and_seeded():
    n = 1000
    split = data.make_splits(np.zeros(n, np.int64), "ref", 1, seed=0)[0]
    assert (len(split.train), len(split.query), len(split.db)) == (800, 100, 100)
    assert len(np.union1d(np.union1d(split.train, split.query), split.db)) == n
    assert not np.intersect1d(split.train, split.query).size and not np.intersect1d(split.query, split.db).size
    again = data.make_splits(np.zeros(n, np.int64), "ref", 1, seed=0)[0]
    other = data.make_splits(np.zeros(n, np.int64), "ref", 1, seed=1)[0]
    assert np.array_equal(split.query, again.query) and not np.array_equal(split.query, other.query)


def test_standard_split_q_per_class():
    y = np.repeat(np.arange(4), 50)
    split = data.make_splits(y, "standard", 1, seed=0, query_per_class=7, num_train=60)[0]
    assert np.bincount(y[split.query]).tolist() == [7, 7, 7, 7]
    assert np.array_equal(np.sort(np.r_[split.query, split.db]), np.arange(200))
    assert len(split.train) == 60 and np.isin(split.train, split.db).all()


def test_ref_folds_partition_the_held_out_items():
    n = 103
    splits = data.make_splits(np.zeros(n, np.int64), "ref", 5, seed=0)
    held_out = np.concatenate([np.r_[s.query, s.db] for s in splits])
    assert np.array_equal(np.sort(held_out), np.arange(n))
    for s in splits:
        assert not np.intersect1d(s.train, np.r_[s.query, s.db]).size
        assert len(s.train) + len(s.query) + len(s.db) == n


def test_too_few_items_is_a_data_error():
    with pytest.raises(data.DataError, match="at least 10"):
        data.make_splits(np.zeros(9, np.int64), "ref", 1, seed=0)
    with pytest.raises(data.DataError, match="--query_per_class"):
        data.make_splits(np.repeat([0, 1], 6), "standard", 1, seed=0, query_per_class=6)


def test_standardise_uses_training_statistics_only():
    rng = np.random.default_rng(0)
    X = rng.normal(3.0, 2.0, (100, 4)).astype(np.float32)
    X[:, 3] = 1.0  # constant feature: std 1, not a division by zero
    train = np.arange(60)
    X[60:, :3] += 1000.0  # test rows far away: they must not move the statistics
    Z = data.standardise(X, train)
    np.testing.assert_allclose(Z[train, :3].mean(0), 0, atol=1e-5)
    np.testing.assert_allclose(Z[train, :3].std(0), 1, atol=1e-5)
    assert np.all(Z[60:, :3] > 100) and np.all(Z[:, 3] == 0) and np.isfinite(Z).all()


def test_training_statistics_in_chunks_are_bitwise_numpys(monkeypatch):
    """Chunked float32 passes give exactly numpy's mean and std of the training rows, whatever the chunk size."""
    rng = np.random.default_rng(1)
    X = (rng.normal(2.0, 3.0, (503, 6)) ** 3).astype(np.float32)
    train = np.sort(rng.choice(503, 400, replace=False))
    for chunk_rows in (7, 64, 1000):
        monkeypatch.setattr(data, "CHUNK_BYTES", chunk_rows * 6 * 4)
        mean, std = data.training_statistics(X, train)
        assert np.array_equal(mean, X[train].mean(axis=0)) and np.array_equal(std, X[train].std(axis=0))
        assert np.array_equal(data.standardise(X, train), (X - X[train].mean(0)) / X[train].std(0))


def test_rows_gather_any_order_and_subsets_compose():
    X = np.arange(40, dtype=np.float32).reshape(10, 4)
    rows = data.Rows(X, np.full(4, 1, np.float32), np.full(4, 2, np.float32))
    idx = np.array([7, 2, 9, 2])
    assert np.array_equal(rows[idx], (X[idx] - 1) / 2) and rows[idx].dtype == np.float32
    sub = rows.subset(np.array([8, 3, 5]))
    assert len(sub) == 3 and sub.shape == (3, 4)
    assert np.array_equal(sub[1:], (X[[3, 5]] - 1) / 2)
    assert np.array_equal(sub[np.array([2, 0])], rows[np.array([5, 8])])


def mapped_rss_kib(path) -> int:
    """Resident KiB of this process's mappings of `path` (/proc/self/smaps)."""
    total, inside = 0, False
    for line in open("/proc/self/smaps"):
        if line[0] in "0123456789abcdef" and "-" in line.split()[0]:
            inside = line.rstrip().endswith(str(path))
        elif inside and line.startswith("Rss:"):
            total += int(line.split()[1])
    return total


@pytest.mark.skipif(not os.path.exists("/proc/self/smaps"), reason="reads /proc/self/smaps (Linux)")
def test_rows_of_a_memory_map_give_its_pages_back(tmp_path, monkeypatch):
    """Passes through Rows leave almost nothing of a memory-mapped matrix resident; the same passes on the bare
    memory map leave all of it (the check can fail)."""
    path = tmp_path / "features.npy"
    np.save(path, np.random.default_rng(0).normal(size=(16384, 512)).astype(np.float16))  # 16 MiB
    X = np.load(path, mmap_mode="r")
    rows = data.Rows(X)
    assert rows.mapped is not None and data.mapped_file(np.zeros(3)) is None
    for start in range(0, len(rows), 1024):
        assert np.array_equal(rows[start:start + 1024], X[start:start + 1024].astype(np.float32))
    for batch in np.random.default_rng(0).permutation(len(rows)).reshape(-1, 128):
        rows[batch]
    assert mapped_rss_kib(path) <= 4 << 10
    for start in range(0, len(X), 1024):
        np.asarray(X[start:start + 1024], dtype=np.float32)
    assert mapped_rss_kib(path) >= 15 << 10


# ----------------------------------------------------------------------------- packed folders

def mixed_folder(root):
    """A per-class folder in the order load_folder reads it: classes 'a' then 'b', (1, d) and (d,) files."""
    rng = np.random.default_rng(0)
    return write_folder(root, {"b": [rng.normal(size=5).astype(np.float32) for _ in range(3)],
                               "a": [rng.normal(size=(1, 5)) for _ in range(4)]})


def test_pack_round_trip_is_memory_mapped_with_labels_and_names(tmp_path, capsys):
    root = mixed_folder(tmp_path / "emb")
    assert data.main(["pack", "--root_dir", str(root), "--out", str(tmp_path / "packed"), "--dtype", "float32"]) == 0
    assert "--root_dir " + str(tmp_path / "packed") in capsys.readouterr().out
    folder, packed = data.load_folder(root, use_cache=False), data.load_dataset("folder", str(tmp_path / "packed"))
    assert isinstance(packed.X, np.memmap) and packed.X.dtype == np.float32
    assert np.array_equal(packed.X, folder.X) and np.array_equal(packed.y, folder.y) and packed.y.dtype == np.int64
    assert packed.classes == folder.classes == ["a", "b"] and packed.items == folder.items and packed.name == "emb"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["emb", "packed"]  # no temporary folder left
    assert sorted(p.name for p in (tmp_path / "packed").iterdir()) == ["features.npy", "items.txt", "labels.npy",
                                                                       "pack.json"]


def test_pack_float16_halves_the_file_and_reads_back_as_float32(tmp_path):
    root = mixed_folder(tmp_path / "emb")
    data.pack_folder(root, tmp_path / "p16")
    folder, packed = data.load_folder(root, use_cache=False), data.load_dataset("folder", str(tmp_path / "p16"))
    assert packed.X.dtype == np.float16 and np.array_equal(packed.X, folder.X.astype(np.float16))
    rows = data.standardised_rows(packed.X, np.arange(7))
    assert rows[:].dtype == np.float32
    assert np.array_equal(rows[:], data.standardise(folder.X.astype(np.float16).astype(np.float32), np.arange(7)))


@pytest.mark.parametrize("case, named", [
    ("no_folder", "--root_dir"), ("mixed_shapes", os.path.join("b", "item_0000.npy: embedding shape (5,)")),
    ("non_finite", os.path.join("b", "item_0001.npy: contains NaN")),
    ("float16_overflow", os.path.join("a", "item_0000.npy: values beyond the float16 range")),
    ("existing_out", "--out"), ("unwritable_out", "--out")])
def test_pack_bad_input_is_one_line_exit_2_and_leaves_nothing(tmp_path, capsys, case, named):
    root = tmp_path / "emb"
    vectors = [np.ones(4, np.float32), np.ones(4, np.float32), np.ones(4, np.float32)]
    if case == "mixed_shapes":
        vectors[1] = np.ones(5, np.float32)
    if case == "non_finite":
        vectors[2] = np.array([1, np.nan, 0, 0], np.float32)
    if case == "float16_overflow":
        vectors[0] = np.array([1e5, 0, 0, 0], np.float32)
    if case != "no_folder":
        write_folder(root, {"a": vectors[:1], "b": vectors[1:]})
    out = tmp_path / "packed"
    if case == "existing_out":
        out.mkdir()
    if case == "unwritable_out":
        (tmp_path / "file").write_text("x")
        out = tmp_path / "file" / "packed"
    before = sorted(tmp_path.iterdir())
    assert data.main(["pack", "--root_dir", str(root), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and named in err[0], err
    assert sorted(tmp_path.iterdir()) == before  # nothing half-written


def test_damaged_packed_folder_is_a_data_error(tmp_path):
    data.pack_folder(mixed_folder(tmp_path / "emb"), tmp_path / "packed")
    np.save(tmp_path / "packed" / "labels.npy", np.zeros(6, np.int64))
    with pytest.raises(data.DataError, match="labels.npy must hold 7 int64 labels"):
        data.load_dataset("folder", str(tmp_path / "packed"))
    (tmp_path / "packed" / "pack.json").write_text("{")
    with pytest.raises(data.DataError, match="unreadable pack.json"):
        data.load_dataset("folder", str(tmp_path / "packed"))


# ----------------------------------------------------------------------------- feature matrix and multi-label data

def save_matrix(tmp_path, X, Y, names=None):
    np.save(tmp_path / "X.npy", X)
    np.save(tmp_path / "Y.npy", Y)
    if names is not None:
        (tmp_path / "names.txt").write_text("\n".join(names) + "\n")
    return tmp_path / "X.npy", tmp_path / "Y.npy", (tmp_path / "names.txt" if names is not None else None)


def test_matrix_integer_labels_float16_and_names(tmp_path):
    X = np.arange(24, dtype=np.float16).reshape(6, 4)
    f, l, n = save_matrix(tmp_path, X, np.array([7, 3, 7, 3, 9, 9]), [f"img{i}.jpg" for i in range(6)])
    d = data.load_dataset("matrix", features=str(f), labels=str(l), names=str(n))
    assert d.X.dtype == np.float32 and d.X.flags.c_contiguous and np.array_equal(d.X, X.astype(np.float32))
    assert d.classes == ["3", "7", "9"] and d.y.tolist() == [1, 0, 1, 0, 2, 2] and d.y.dtype == np.int64
    assert d.items == [f"img{i}.jpg" for i in range(6)] and d.name == "X"


def test_matrix_float32_stays_memory_mapped_and_multi_hot_is_2d(tmp_path, capsys):
    X = np.random.default_rng(0).normal(size=(12, 5)).astype(np.float32)
    Y = np.eye(3, dtype=np.float32)[np.arange(12) % 3]
    Y[0, 1] = 1
    f, l, _ = save_matrix(tmp_path, X, Y)
    d = data.load_dataset("matrix", features=str(f), labels=str(l))
    assert isinstance(d.X, np.memmap) and np.array_equal(d.X, X)
    assert d.y.shape == (12, 3) and d.y.dtype == np.uint8 and np.array_equal(d.y, Y)
    assert d.classes == ["0", "1", "2"] and d.items[3] == "X/3"
    assert "multi-label (3 classes" in capsys.readouterr().err


def test_non_finite_check_reads_chunks_and_names_the_row(tmp_path, monkeypatch):
    X = np.ones((50, 4), np.float32)
    X[37, 2] = np.inf
    f, l, _ = save_matrix(tmp_path, X, np.zeros(50, np.int64))
    seen = []
    monkeypatch.setattr(data, "CHUNK_BYTES", 10 * 4 * 4)  # 10 rows per chunk
    real_isfinite = np.isfinite
    monkeypatch.setattr(np, "isfinite", lambda a: seen.append(len(a)) or real_isfinite(a))
    with pytest.raises(data.DataError, match="row 37 contains NaN or Inf"):
        data.load_matrix(f, l)
    assert seen == [10, 10, 10, 10]


def test_multi_label_subsample_and_standard_split_are_random_and_seeded():
    rng = np.random.default_rng(0)
    Y = (rng.random((300, 4)) < 0.5).astype(np.uint8)
    Y[Y.sum(1) == 0, 2] = 1
    a, b = data.subsample_rows(Y, 100, seed=5), data.subsample_rows(Y, 100, seed=5)
    assert len(a) == 100 and np.array_equal(a, b) and np.all(np.diff(a) > 0)
    assert not np.array_equal(a, data.subsample_rows(Y, 100, seed=6))
    s = data.make_splits(Y, "standard", 1, 0, query_per_class=5, num_train=50)[0]
    assert len(s.query) == 20 and len(s.train) == 50 and not np.intersect1d(s.query, s.db).size
    assert len(s.query) + len(s.db) == 300
    with pytest.raises(data.DataError, match="query_per_class 80 x 4 classes"):
        data.make_splits(Y, "standard", 1, 0, query_per_class=80)


@pytest.mark.skipif(not (data.FASHION_MNIST_DIR / "t10k-labels-idx1-ubyte.gz").is_file(),
                    reason="Debian's dataset-fashion-mnist is not installed")
def test_fashion_mnist_pairs_side_by_side_labelled_by_their_classes():
    base = data.load_fashion_mnist()
    full = data.load_fashion_mnist_pairs(seed=4, n_pairs=500)
    assert full.X.shape == (500, 1568) and full.y.shape == (500, 10) and full.classes == base.classes
    pair = np.random.default_rng(4).integers(0, len(base.y), size=(500, 2))
    images = full.X.reshape(500, 28, 56)
    assert np.array_equal(images[:, :, :28].reshape(500, -1), base.X[pair[:, 0]])
    assert np.array_equal(images[:, :, 28:].reshape(500, -1), base.X[pair[:, 1]])
    for row, (a, b) in zip(full.y, pair):
        assert set(np.flatnonzero(row)) == {base.y[a], base.y[b]}
    assert 1 <= full.y.sum(1).min() and full.y.sum(1).max() == 2
    again = data.load_fashion_mnist_pairs(seed=4, n_pairs=500)
    assert np.array_equal(again.X, full.X) and np.array_equal(again.y, full.y)
    sub = data.load_fashion_mnist_pairs(seed=4, n_pairs=500, subsample=60)  # = all pairs, then the same rows
    keep = data.subsample_rows(full.y, 60, 4)
    assert np.array_equal(sub.X, full.X[keep]) and np.array_equal(sub.y, full.y[keep])
    assert sub.items == [full.items[i] for i in keep]
    assert not np.array_equal(data.load_fashion_mnist_pairs(seed=5, n_pairs=500).y, full.y)
