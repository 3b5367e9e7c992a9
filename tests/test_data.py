"""data.py: per-class .npy folders (class order, labels, (1, d) files, the cache and its invalidation), the built-in
datasets, the splits (ref 80/10/10, standard q per class, folds) and standardisation on training statistics only."""
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
