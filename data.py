"""Load embeddings (built-in datasets or the paper's per-class .npy folders), split and standardise them."""
from __future__ import annotations

import gzip
import hashlib
import os
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from sklearn.model_selection import KFold, train_test_split

FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
CACHE_VERSION = 1


class DataError(ValueError):
    """Bad input data: main.py prints the message as one line on stderr and exits with status 2."""


@dataclass
class Dataset:
    name: str
    X: np.ndarray            # (n, d) float32, C-contiguous
    y: np.ndarray            # (n,) int64 labels 0..C-1
    classes: list[str]       # class names, index = label
    items: list[str]         # one name per row (file path relative to the root, or "digits/17")


@dataclass
class Split:
    train: np.ndarray        # row indices into Dataset.X
    query: np.ndarray
    db: np.ndarray


# ----------------------------------------------------------------------------- built-in datasets

def load_digits_dataset() -> Dataset:
    """scikit-learn's 1,797 real 8x8 handwritten digits, 64-d, 10 classes (ships with scikit-learn)."""
    from sklearn.datasets import load_digits
    digits = load_digits()
    X = np.ascontiguousarray(digits.data, dtype=np.float32)
    return Dataset("digits", X, digits.target.astype(np.int64),
                   [str(c) for c in range(10)], [f"digits/{i}" for i in range(len(X))])


def read_idx(path: Path) -> np.ndarray:
    """Read a gzipped IDX file (the MNIST format: magic 0x0000 08 ndim, big-endian dims, uint8 data)."""
    try:
        with gzip.open(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError) as e:  # not gzip, truncated, unreadable
        raise DataError(f"{path}: cannot read gzipped IDX file ({type(e).__name__}: {e})")
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 8:
        raise DataError(f"{path}: not an unsigned-byte IDX file")
    ndim = raw[3]
    shape = tuple(int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    data = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim)
    if data.size != int(np.prod(shape)):
        raise DataError(f"{path}: truncated IDX file ({data.size} values, header says {shape})")
    return data.reshape(shape)


def load_fashion_mnist(folder: str | Path | None = None) -> Dataset:
    """Fashion-MNIST: 70,000 real 28x28 images (train then t10k), flattened to 784-d pixels in [0, 1]."""
    folder = Path(folder) if folder else FASHION_MNIST_DIR
    parts = []
    for prefix in ("train", "t10k"):
        images = folder / f"{prefix}-images-idx3-ubyte.gz"
        labels = folder / f"{prefix}-labels-idx1-ubyte.gz"
        for path in (images, labels):
            if not path.is_file():
                raise DataError(f"fashion_mnist: {path} not found; install it with "
                                f"'apt-get install dataset-fashion-mnist' or pass --root_dir DIR holding the IDX files")
        parts.append((read_idx(images), read_idx(labels)))
    X = np.concatenate([im.reshape(len(im), -1) for im, _ in parts]).astype(np.float32) / 255.0
    y = np.concatenate([lab for _, lab in parts]).astype(np.int64)
    classes = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
               "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
    return Dataset("fashion_mnist", np.ascontiguousarray(X), y, classes, [f"fashion_mnist/{i}" for i in range(len(X))])


# ----------------------------------------------------------------------------- per-class .npy folders

def sorted_class_names(names: list[str]) -> list[str]:
    """Numeric order when every name is an integer, else lexicographic (labels are 0..C-1 in this order)."""
    if all(n.lstrip("-").isdigit() for n in names):
        return sorted(names, key=int)
    return sorted(names)


def list_class_files(root: Path) -> tuple[list[str], list[list[Path]], int]:
    """Class names, the .npy files of each class (sorted), and the count of ignored non-.npy files."""
    if not root.exists():
        raise DataError(f"--root_dir {root}: no such directory")
    if not root.is_dir():
        raise DataError(f"--root_dir {root}: not a directory")
    class_dirs = {p.name: p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")}
    if not class_dirs:
        raise DataError(f"--root_dir {root}: no class folders (expected ROOT/<class>/<item>.npy)")
    classes = sorted_class_names(list(class_dirs))
    files, ignored = [], 0
    for c in classes:
        entries = [p for p in class_dirs[c].iterdir() if p.is_file() and not p.name.startswith(".")]
        npy = sorted(p for p in entries if p.suffix == ".npy")
        ignored += len(entries) - len(npy)
        if not npy:
            raise DataError(f"--root_dir {root}: class folder '{c}' has no .npy files")
        files.append(npy)
    return classes, files, ignored


def read_vector(path: Path) -> np.ndarray:
    """One embedding file: shape (d,) or (1, d), finite values."""
    try:
        v = np.load(path, allow_pickle=False)
    except Exception as e:  # numpy raises ValueError/EOFError/OSError/UnpicklingError for bad files
        raise DataError(f"{path}: cannot read .npy file ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else 'corrupt'})")
    if v.ndim == 2 and v.shape[0] == 1:
        v = v[0]
    if v.ndim != 1 or v.size == 0:
        raise DataError(f"{path}: expected an embedding of shape (d,) or (1, d) with d >= 1, got {v.shape}")
    if not np.issubdtype(v.dtype, np.number):
        raise DataError(f"{path}: expected numbers, got dtype {v.dtype}")
    if not np.all(np.isfinite(v)):
        raise DataError(f"{path}: contains NaN or Inf values")
    return v


def folder_fingerprint(files: list[list[Path]]) -> str:
    """Hash of every file's path, size and mtime: the cache is stale when any of them changes."""
    h = hashlib.sha1(str(CACHE_VERSION).encode())
    for cls in files:
        for p in cls:
            st = p.stat()
            h.update(f"{p}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()


def cache_path(root: Path) -> Path:
    """The cache lives next to the folder: PARENT/.ROOTNAME.hagcn-cache.npz."""
    root = root.resolve()
    return root.parent / f".{root.name}.hagcn-cache.npz"


def load_folder(root: str | Path, use_cache: bool = True) -> Dataset:
    """The paper's format ROOT/<class>/<item>.npy, loaded once into one float32 array (cached next to ROOT)."""
    root = Path(root)
    classes, files, ignored = list_class_files(root)
    if ignored:
        print(f"warning: --root_dir {root}: ignored {ignored} non-.npy file(s)", file=sys.stderr)
    fingerprint = folder_fingerprint(files)
    cache = cache_path(root)
    if use_cache and cache.is_file():
        try:
            with np.load(cache, allow_pickle=False) as z:
                if str(z["fingerprint"]) == fingerprint:
                    return Dataset(root.name, np.ascontiguousarray(z["X"]), z["y"], list(z["classes"]), list(z["items"]))
        except Exception:
            pass  # an unreadable cache is rebuilt below
    X, y, items, first = [], [], [], None
    for label, cls in enumerate(files):
        for p in cls:
            v = read_vector(p)
            if first is None:
                first = (p, v.shape)
            elif v.shape != first[1]:
                raise DataError(f"{p}: embedding shape {v.shape} differs from {first[0]} with shape {first[1]}")
            X.append(v)
            y.append(label)
            items.append(str(p.relative_to(root)))
    data = Dataset(root.name, np.ascontiguousarray(np.stack(X), dtype=np.float32), np.asarray(y, np.int64), classes, items)
    if use_cache:
        write_cache(cache, data, fingerprint)
    return data


def write_cache(cache: Path, data: Dataset, fingerprint: str) -> None:
    """Atomic write (temporary name, then rename); an unwritable parent only costs the cache."""
    tmp = cache.with_name(cache.name + f".tmp{os.getpid()}.npz")
    try:
        np.savez(tmp, X=data.X, y=data.y, classes=np.asarray(data.classes), items=np.asarray(data.items),
                 fingerprint=np.asarray(fingerprint))
        os.replace(tmp, cache)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        print(f"warning: cannot write cache {cache} ({e.strerror}); loading from the files each time", file=sys.stderr)


# ----------------------------------------------------------------------------- choosing, subsampling, splitting

def load_dataset(dataset: str, root_dir: str | None = None, subsample: int | None = None, seed: int = 0) -> Dataset:
    """The dataset named by --dataset ('folder' reads --root_dir), optionally a class-stratified random subset."""
    if dataset == "digits":
        data = load_digits_dataset()
    elif dataset == "fashion_mnist":
        data = load_fashion_mnist(root_dir)
    elif dataset == "folder":
        if not root_dir:
            raise DataError("--dataset folder needs --root_dir PATH (ROOT/<class>/<item>.npy)")
        data = load_folder(root_dir)
    else:
        raise DataError(f"--dataset {dataset}: unknown (choose digits, fashion_mnist or folder)")
    if subsample and subsample < len(data.y):
        keep, _ = train_test_split(np.arange(len(data.y)), train_size=subsample, random_state=seed,
                                   stratify=data.y if np.bincount(data.y).min() >= 2 else None)
        keep = np.sort(keep)
        data = Dataset(data.name, np.ascontiguousarray(data.X[keep]), data.y[keep], data.classes,
                       [data.items[i] for i in keep])
    return data


def ref_split(idx: np.ndarray, seed: int) -> Split:
    """The paper repo's protocol: 80/20 train/test, then the test part 50/50 into database/query."""
    train, test = train_test_split(idx, test_size=0.2, random_state=seed)
    db, query = train_test_split(test, test_size=0.5, random_state=seed)
    return Split(np.sort(train), np.sort(query), np.sort(db))


def standard_split(y: np.ndarray, per_class: int, num_train: int, seed: int) -> Split:
    """Usual unsupervised-hashing protocol: `per_class` queries per class, database = the rest, train = a database sample."""
    rng = np.random.default_rng(seed)
    query = []
    for c in np.unique(y):
        members = np.flatnonzero(y == c)
        if len(members) <= per_class:
            raise DataError(f"--split standard: class {c} has {len(members)} items, needs more than "
                            f"--query_per_class {per_class}")
        query.append(rng.choice(members, per_class, replace=False))
    query = np.sort(np.concatenate(query))
    db = np.setdiff1d(np.arange(len(y)), query)
    train = np.sort(rng.choice(db, min(num_train, len(db)), replace=False))
    return Split(train, query, db)


def make_splits(y: np.ndarray, split: str, folds: int, seed: int,
                query_per_class: int = 100, num_train: int = 10000) -> list[Split]:
    """One split per fold. ref + --folds F: K-fold, each fold's held-out part halved into database/query.
    standard + --folds F: F independent query draws (seeds seed..seed+F-1)."""
    n = len(y)
    if n < 10:
        raise DataError(f"dataset has {n} items; at least 10 are needed to form train/query/database splits")
    if split == "standard":
        return [standard_split(y, query_per_class, num_train, seed + f) for f in range(folds)]
    if 2 * folds > n:
        raise DataError(f"--folds {folds}: {n} items are too few (each fold's held-out part needs a query and a database item)")
    idx = np.arange(n)
    if folds == 1:
        return [ref_split(idx, seed)]
    splits = []
    for train, test in KFold(n_splits=folds, shuffle=True, random_state=seed).split(idx):
        db, query = train_test_split(test, test_size=0.5, random_state=seed)
        splits.append(Split(np.sort(train), np.sort(query), np.sort(db)))
    return splits


def standardise(X: np.ndarray, train: np.ndarray) -> np.ndarray:
    """Zero mean, unit variance with statistics of the training split only (constant features get std 1)."""
    mean = X[train].mean(axis=0)
    std = X[train].std(axis=0)
    std[std < 1e-8] = 1.0
    return np.ascontiguousarray((X - mean) / std, dtype=np.float32)
