"""Load embeddings (built-in datasets, the paper's per-class .npy folders, a packed folder, or one feature matrix
with integer or multi-hot labels), split and standardise them.

    python data.py pack --root_dir DIR --out PACKED [--dtype float16|float32]   # once; then --root_dir PACKED
"""
from __future__ import annotations

import gzip
import hashlib
import json
import mmap
import os
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator, Protocol

import numpy as np
from sklearn.model_selection import KFold, train_test_split

FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
CACHE_VERSION = 1


class DataError(ValueError):
    """Bad input data: main.py prints the message as one line on stderr and exits with status 2."""


@dataclass
class Dataset:
    name: str
    X: np.ndarray            # (n, d) float32, C-contiguous; a packed folder's is a float16/float32 memory map
    y: np.ndarray            # (n,) int64 labels 0..C-1, or (n, C) uint8 0/1 multi-hot (multi-label data)
    classes: list[str]       # class names, index = label
    items: list[str]         # one name per row (file path relative to the root, or "digits/17")


@dataclass
class Split:
    train: np.ndarray        # row indices into Dataset.X: the rows every method fits on
    query: np.ndarray
    db: np.ndarray
    val_query: np.ndarray = field(default_factory=lambda: np.empty(0, np.int64))  # held out of `train`
    val_db: np.ndarray = field(default_factory=lambda: np.empty(0, np.int64))     # a sample of `train`


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


FASHION_MNIST_PAIRS = 70000


def load_fashion_mnist_pairs(folder: str | Path | None = None, seed: int = 0, n_pairs: int = FASHION_MNIST_PAIRS,
                             subsample: int | None = None) -> Dataset:
    """Multi-label data derived from Fashion-MNIST: `n_pairs` pairs of images (a, b) drawn independently with
    np.random.default_rng(seed), placed side by side (28 x 56, 1,568-d, a on the left), labelled by the set of
    their classes (10-column multi-hot: one or two labels). With `subsample`, the rows that `subsample_rows` keeps
    of all n_pairs (only those images are assembled: the same rows as building every pair, then subsampling)."""
    base = load_fashion_mnist(folder)
    pair = np.random.default_rng(seed).integers(0, len(base.y), size=(n_pairs, 2))
    y = np.zeros((n_pairs, len(base.classes)), np.uint8)
    y[np.arange(n_pairs)[:, None], base.y[pair]] = 1
    keep = subsample_rows(y, subsample, seed)
    pair, y = pair[keep], y[keep]
    images = base.X.reshape(-1, 28, 28)
    X = np.concatenate([images[pair[:, 0]], images[pair[:, 1]]], axis=2).reshape(len(pair), 28 * 56)
    items = [f"fashion_mnist_pairs/{p} (fashion_mnist/{a} | fashion_mnist/{b})" for p, (a, b) in zip(keep, pair)]
    return Dataset("fashion_mnist_pairs", np.ascontiguousarray(X), y, base.classes, items)


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


def folder_rows(root: Path, files: list[list[Path]]) -> Iterator[tuple[np.ndarray, int, str]]:
    """Each file's vector, label and item name (its path relative to root), class by class; all of one shape."""
    first = None
    for label, cls in enumerate(files):
        for p in cls:
            v = read_vector(p)
            if first is None:
                first = (p, v.shape)
            elif v.shape != first[1]:
                raise DataError(f"{p}: embedding shape {v.shape} differs from {first[0]} with shape {first[1]}")
            yield v, label, str(p.relative_to(root))


def load_folder(root: str | Path, use_cache: bool = True) -> Dataset:
    """The paper's format ROOT/<class>/<item>.npy, loaded once into one float32 array (cached next to ROOT), or a
    packed folder (see pack_folder), memory-mapped."""
    root = Path(root)
    if is_packed(root):
        return load_packed(root)
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
    X, y, items = zip(*folder_rows(root, files))
    data = Dataset(root.name, np.ascontiguousarray(np.stack(X), dtype=np.float32), np.asarray(y, np.int64), classes,
                   list(items))
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


# ----------------------------------------------------------------------------- packed folders (larger than RAM)
# PACKED/features.npy (n, d) float16 or float32, labels.npy (n,) int64, items.txt (one item name a line) and
# pack.json (format, rows, dim, dtype, name, classes): written once, then memory-mapped by --root_dir PACKED.

PACK_MANIFEST = "pack.json"
PACK_FORMAT = "hagcn-packed-embeddings/1"
PACK_DTYPES = ("float16", "float32")


def is_packed(root: Path) -> bool:
    return (root / PACK_MANIFEST).is_file()


def write_pack(out: str | Path, shape: tuple[int, int], dtype: str, name: str, classes: list[str],
               chunks: Iterable[tuple[np.ndarray, np.ndarray, list[str]]]) -> None:
    """A packed folder from consecutive chunks (rows (m, d), labels (m,), m item names), written straight into a
    memory-mapped features.npy inside a temporary folder that is renamed to `out` at the end: a failure leaves
    nothing. Rows that overflow `dtype` (float16 beyond +-65504) are a DataError naming the item."""
    out = Path(out)
    if out.exists():
        raise DataError(f"--out {out}: already exists (give a new folder name)")
    tmp = out.with_name(f".{out.name}.tmp{os.getpid()}")
    try:
        tmp.mkdir()
    except OSError as e:
        raise DataError(f"--out {out}: cannot create ({e.strerror})")
    try:
        X = np.lib.format.open_memmap(tmp / "features.npy", mode="w+", dtype=dtype, shape=shape)
        labels = np.empty(shape[0], np.int64)
        start = 0
        with open(tmp / "items.txt", "w", encoding="utf-8", newline="\n") as items:
            for rows, y, names in chunks:
                stop = start + len(rows)
                with np.errstate(over="ignore"):
                    X[start:stop] = rows
                bad = ~np.isfinite(X[start:stop]).all(axis=1)
                if bad.any():
                    raise DataError(f"{names[int(bad.argmax())]}: values beyond the {dtype} range; "
                                    f"pack with --dtype float32")
                broken = [s for s in names if s.splitlines() != [s]]
                if broken:
                    raise DataError(f"{broken[0]!r}: a line break in an item name (items.txt holds one name a line)")
                labels[start:stop] = y
                items.writelines(f"{s}\n" for s in names)
                start = stop
        if start != shape[0]:
            raise ValueError(f"write_pack: {start} rows written, {shape[0]} announced")
        X.flush()
        del X
        np.save(tmp / "labels.npy", labels)
        manifest = {"format": PACK_FORMAT, "rows": shape[0], "dim": shape[1], "dtype": dtype, "name": name,
                    "classes": classes}
        (tmp / PACK_MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n", encoding="utf-8")
        os.replace(tmp, out)
    except BaseException as e:
        shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(e, OSError):
            raise DataError(f"--out {out}: cannot write ({e.strerror or e})") from e
        raise


def pack_folder(root: str | Path, out: str | Path, dtype: str = "float16") -> None:
    """`python data.py pack`: a per-class folder (ROOT/<class>/<item>.npy, checked file by file as load_folder does,
    one file in memory at a time) written once as a packed folder of `dtype` rows."""
    root = Path(root)
    classes, files, ignored = list_class_files(root)
    if ignored:
        print(f"warning: --root_dir {root}: ignored {ignored} non-.npy file(s)", file=sys.stderr)
    dim = read_vector(files[0][0]).shape[0]
    chunks = ((v[None], [label], [item]) for v, label, item in folder_rows(root, files))
    write_pack(out, (sum(map(len, files)), dim), dtype, root.name, classes, chunks)


def load_packed(root: Path) -> Dataset:
    """A packed folder: features memory-mapped (read in chunks: see Rows), labels, item and class names in RAM.
    The values were checked (finite) when packed and are not read here."""
    try:
        manifest = json.loads((root / PACK_MANIFEST).read_text(encoding="utf-8"))
        n, dim, dtype = int(manifest["rows"]), int(manifest["dim"]), str(manifest["dtype"])
        name, classes = str(manifest["name"]), [str(c) for c in manifest["classes"]]
        if manifest["format"] != PACK_FORMAT:
            raise ValueError(f"format {manifest['format']!r}, expected {PACK_FORMAT!r}")
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise DataError(f"--root_dir {root}: unreadable {PACK_MANIFEST} ({getattr(e, 'strerror', None) or e})")
    X = open_npy(root / "features.npy", "--root_dir", mmap=True)
    if X.shape != (n, dim) or X.dtype != np.dtype(dtype) or dtype not in PACK_DTYPES:
        raise DataError(f"--root_dir {root}: features.npy has shape {X.shape} and dtype {X.dtype}, "
                        f"{PACK_MANIFEST} says ({n}, {dim}) {dtype}")
    y = np.asarray(open_npy(root / "labels.npy", "--root_dir", mmap=False))
    if y.shape != (n,) or y.dtype != np.int64 or (n and not 0 <= y.min() <= y.max() < len(classes)):
        raise DataError(f"--root_dir {root}: labels.npy must hold {n} int64 labels in 0..{len(classes) - 1}")
    return Dataset(name, X, y, classes, read_names(root / "items.txt", n, "--root_dir"))


# ----------------------------------------------------------------------------- one feature matrix + labels

CHUNK_BYTES = 64 << 20  # a pass over a feature matrix (non-finite check, statistics, graph) reads chunks of this size


def chunk_rows(d: int, itemsize: int = 4) -> int:
    """Rows of d values of `itemsize` bytes in one chunk of about CHUNK_BYTES."""
    return max(1, CHUNK_BYTES // max(1, itemsize * d))


def open_npy(path: str | Path, flag: str, mmap: bool) -> np.ndarray:
    """An .npy array (memory-mapped when `mmap`); unreadable files are a DataError naming the flag and the file."""
    try:
        arr = np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)
    except FileNotFoundError:
        raise DataError(f"{flag} {path}: no such file")
    except IsADirectoryError:
        raise DataError(f"{flag} {path}: is a directory, expected an .npy file")
    except Exception as e:  # ValueError/EOFError/OSError/UnpicklingError for corrupt or truncated files
        raise DataError(f"{flag} {path}: cannot read .npy file ({type(e).__name__}: "
                        f"{str(e).splitlines()[0] if str(e) else 'corrupt'})")
    if not isinstance(arr, np.ndarray):  # an .npz archive
        arr.close()
        raise DataError(f"{flag} {path}: expected one .npy array, got an .npz archive")
    return arr


def constant_features(X: np.ndarray) -> int:
    """How many columns of X hold one value in every row (read in chunks: X may be a memory map)."""
    first = np.asarray(X[0], np.float32)
    varies = np.zeros(X.shape[1], bool)
    step = chunk_rows(X.shape[1])
    for start in range(0, len(X), step):
        varies |= (np.asarray(X[start:start + step], np.float32) != first).any(axis=0)
    return int(X.shape[1] - varies.sum())


def first_non_finite_row(X: np.ndarray) -> int | None:
    """Index of the first row holding NaN or Inf, reading X in row chunks (bounded memory for memmaps)."""
    rows = chunk_rows(X.shape[1], X.itemsize)
    for start in range(0, len(X), rows):
        bad = ~np.isfinite(X[start:start + rows]).all(axis=1)
        if bad.any():
            return start + int(bad.argmax())
    return None


def read_features(path: str | Path) -> np.ndarray:
    """--features: (n, d) float16/float32/float64 matrix, finite, memory-mapped (float32 stays a memmap)."""
    X = open_npy(path, "--features", mmap=True)
    if X.ndim != 2 or X.shape[0] == 0 or X.shape[1] == 0:
        raise DataError(f"--features {path}: expected a matrix of shape (n, d) with n, d >= 1, got shape {X.shape}")
    if X.dtype.kind != "f":
        raise DataError(f"--features {path}: expected float16 or float32 values, got dtype {X.dtype}")
    bad = first_non_finite_row(X)
    if bad is not None:
        raise DataError(f"--features {path}: row {bad} contains NaN or Inf values")
    if X.dtype == np.float32 and X.flags.c_contiguous:
        return X  # stays memory-mapped until a split is taken
    return np.ascontiguousarray(X, dtype=np.float32)


def read_labels(path: str | Path, n: int) -> tuple[np.ndarray, list[str]]:
    """--labels: integer labels (n,) -> (labels 0..C-1 in sorted order of the values, their names), or a 0/1
    multi-hot matrix (n, C) -> (uint8 matrix, names '0'..'C-1'); every multi-hot row needs at least one 1."""
    Y = np.asarray(open_npy(path, "--labels", mmap=False))
    if Y.ndim not in (1, 2) or len(Y) != n:
        raise DataError(f"--labels {path}: expected shape ({n},) or ({n}, C) to match the {n} rows of --features, "
                        f"got {Y.shape}")
    if Y.ndim == 1:
        if Y.dtype.kind not in "iu":
            raise DataError(f"--labels {path}: 1-D labels must be integers, got dtype {Y.dtype} "
                            f"(or give a 0/1 multi-hot matrix of shape (n, C))")
        values, y = np.unique(Y, return_inverse=True)
        return y.astype(np.int64), [str(v) for v in values]
    if Y.shape[1] == 0:
        raise DataError(f"--labels {path}: a multi-hot matrix needs at least one class column, got shape {Y.shape}")
    if Y.dtype.kind not in "biuf" or not np.isin(Y, (0, 1)).all():
        raise DataError(f"--labels {path}: 2-D labels must be a 0/1 multi-hot matrix, got "
                        f"{'dtype ' + str(Y.dtype) if Y.dtype.kind not in 'biuf' else 'values other than 0 and 1'}")
    empty = np.flatnonzero(~Y.any(axis=1))
    if len(empty):
        raise DataError(f"--labels {path}: {len(empty)} item(s) have no label (row {empty[0]} is all zeros); "
                        f"every item needs at least one")
    return Y.astype(np.uint8), [str(c) for c in range(Y.shape[1])]


def read_names(path: str | Path, n: int, flag: str = "--names") -> list[str]:
    """--names (or a packed folder's items.txt): one item name per line, exactly n lines."""
    try:
        names = Path(path).read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise DataError(f"{flag} {path}: no such file")
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(f"{flag} {path}: cannot read ({getattr(e, 'strerror', None) or e})")
    if len(names) != n:
        raise DataError(f"{flag} {path}: {len(names)} names for the {n} rows of the features (one name per line)")
    return names


def load_matrix(features: str | Path, labels: str | Path, names: str | Path | None = None) -> Dataset:
    """--features X.npy (n, d) with --labels Y.npy ((n,) integers or (n, C) 0/1 multi-hot) and optional --names."""
    X = read_features(features)
    y, classes = read_labels(labels, len(X))
    items = read_names(names, len(X)) if names else [f"{Path(features).stem}/{i}" for i in range(len(X))]
    return Dataset(Path(features).stem, X, y, classes, items)


# ----------------------------------------------------------------------------- choosing, subsampling, splitting

def load_dataset(dataset: str, root_dir: str | None = None, subsample: int | None = None, seed: int = 0, *,
                 features: str | None = None, labels: str | None = None, names: str | None = None) -> Dataset:
    """The dataset named by --dataset ('folder' reads --root_dir, 'matrix' --features/--labels/--names), optionally a
    random subset of `subsample` items (class-stratified for single-label data)."""
    if dataset == "fashion_mnist_pairs":
        data = load_fashion_mnist_pairs(root_dir, seed, subsample=subsample)
    else:
        data = subsample_dataset(load_full(dataset, root_dir, features, labels, names), subsample, seed)
    if is_multi_label(data.y):
        print(f"note: {data.name} is multi-label ({data.y.shape[1]} classes, {data.y.sum(1).mean():.2f} labels per "
              f"item): --subsample and the splits draw items at random, not per class", file=sys.stderr)
    return data


def load_full(dataset: str, root_dir: str | None, features: str | None, labels: str | None,
              names: str | None) -> Dataset:
    if dataset == "digits":
        return load_digits_dataset()
    if dataset == "fashion_mnist":
        return load_fashion_mnist(root_dir)
    if dataset == "folder":
        if not root_dir:
            raise DataError("--dataset folder needs --root_dir PATH (ROOT/<class>/<item>.npy)")
        return load_folder(root_dir)
    if dataset == "matrix":
        if not features or not labels:
            raise DataError("--dataset matrix needs --features X.npy and --labels Y.npy")
        return load_matrix(features, labels, names)
    raise DataError(f"--dataset {dataset}: unknown (choose digits, fashion_mnist, fashion_mnist_pairs, folder or matrix)")


def is_multi_label(y: np.ndarray) -> bool:
    """True for (n, C) multi-hot labels, False for (n,) integer labels."""
    return y.ndim == 2


def subsample_rows(y: np.ndarray, subsample: int | None, seed: int) -> np.ndarray:
    """Sorted row indices of a random subset of `subsample` rows (all rows when None or too large); stratified by
    class for integer labels where every class has 2 items, uniformly random for multi-hot labels."""
    n = len(y)
    if not subsample or subsample >= n:
        return np.arange(n)
    stratify = y if not is_multi_label(y) and np.bincount(y).min() >= 2 else None
    keep, _ = train_test_split(np.arange(n), train_size=subsample, random_state=seed, stratify=stratify)
    return np.sort(keep)


def subsample_dataset(data: Dataset, subsample: int | None, seed: int) -> Dataset:
    if not subsample or subsample >= len(data.y):
        return data
    keep = subsample_rows(data.y, subsample, seed)
    return Dataset(data.name, np.ascontiguousarray(data.X[keep]), data.y[keep], data.classes,
                   [data.items[i] for i in keep])


def ref_split(idx: np.ndarray, seed: int) -> Split:
    """The paper repo's protocol: 80/20 train/test, then the test part 50/50 into database/query."""
    train, test = train_test_split(idx, test_size=0.2, random_state=seed)
    db, query = train_test_split(test, test_size=0.5, random_state=seed)
    return Split(np.sort(train), np.sort(query), np.sort(db))


def standard_split(y: np.ndarray, per_class: int, num_train: int, seed: int) -> Split:
    """Usual unsupervised-hashing protocol: `per_class` queries per class, database = the rest, train = a database sample.
    Multi-hot labels cannot be drawn per class: per_class x C queries drawn at random instead."""
    rng = np.random.default_rng(seed)
    if is_multi_label(y):
        n_query = per_class * y.shape[1]
        if n_query >= len(y):
            raise DataError(f"--split standard: {len(y)} multi-label items, needs more than --query_per_class "
                            f"{per_class} x {y.shape[1]} classes = {n_query}")
        query = np.sort(rng.choice(len(y), n_query, replace=False))
    else:
        query = np.sort(np.concatenate([per_class_queries(y, c, per_class, rng) for c in np.unique(y)]))
    db = np.setdiff1d(np.arange(len(y)), query)
    train = np.sort(rng.choice(db, min(num_train, len(db)), replace=False))
    return Split(train, query, db)


def per_class_queries(y: np.ndarray, c: int, per_class: int, rng: np.random.Generator) -> np.ndarray:
    members = np.flatnonzero(y == c)
    if len(members) <= per_class:
        raise DataError(f"--split standard: class {c} has {len(members)} items, needs more than "
                        f"--query_per_class {per_class}")
    return rng.choice(members, per_class, replace=False)


def make_splits(y: np.ndarray, split: str, folds: int, seed: int, query_per_class: int = 100,
                num_train: int = 10000, val_queries: int = 0, val_db: int = 0) -> list[Split]:
    """One split per fold. ref + --folds F: K-fold, each fold's held-out part halved into database/query.
    standard + --folds F: F independent query draws (seeds seed..seed+F-1). With `val_queries`, each fold's training
    part is split once more (with_validation)."""
    n = len(y)
    if n < 10:
        raise DataError(f"dataset has {n} items; at least 10 are needed to form train/query/database splits")
    if split == "standard":
        splits = [standard_split(y, query_per_class, num_train, seed + f) for f in range(folds)]
    elif 2 * folds > n:
        raise DataError(f"--folds {folds}: {n} items are too few (each fold's held-out part needs a query and a database item)")
    elif folds == 1:
        splits = [ref_split(np.arange(n), seed)]
    else:
        splits = []
        for train, test in KFold(n_splits=folds, shuffle=True, random_state=seed).split(np.arange(n)):
            db, query = train_test_split(test, test_size=0.5, random_state=seed)
            splits.append(Split(np.sort(train), np.sort(query), np.sort(db)))
    return [with_validation(s, y, val_queries, val_db, seed) for s in splits] if val_queries else splits


def with_validation(split: Split, y: np.ndarray, val_queries: int, val_db: int, seed: int) -> Split:
    """The split with a labelled validation part carved from its training rows only: `val_queries` of them (at most a
    tenth, class-stratified where possible) are held out of training for every method, so that supervised methods
    never see their labels and every method fits on the same rows; the validation database is a sample of at most
    `val_db` of the remaining training rows. Query and database rows never take part."""
    n_query = max(1, min(val_queries, len(split.train) // 10))
    labels = y[split.train]
    stratified = not is_multi_label(y) and np.bincount(labels).min() >= 2 and n_query > labels.max()
    stratify = labels if stratified else None
    train, val_query = train_test_split(split.train, test_size=n_query, random_state=seed, stratify=stratify)
    rng = np.random.default_rng(seed)
    val_db = rng.choice(train, min(val_db, len(train)), replace=False) if val_db else train
    return Split(np.sort(train), split.query, split.db, np.sort(val_query), np.sort(val_db))


# ----------------------------------------------------------------------------- standardised rows, read on demand

def mapped_file(X: np.ndarray) -> mmap.mmap | None:
    """The mmap behind a memory-mapped array (np.load(mmap_mode=...) and views of it); None for an array in RAM."""
    base = X
    while base is not None and not isinstance(base, mmap.mmap):
        base = getattr(base, "base", None)
    return base


class RowSource(Protocol):
    """What training and encoding read features through: float32 rows for a slice or an index array (Rows; a float32
    array or a tensor also qualify)."""

    def __len__(self) -> int: ...

    def __getitem__(self, key): ...


class Rows:
    """Rows of a feature matrix in RAM or memory-mapped (float16/float32), read on demand as float32 (x - mean) / std:
    training, the neighbour graph, the closed-form baselines and encoding all see the data through it, so a memory
    map gives bitwise the codes of the in-memory copy. rows[a:b] and rows[index array] gather in ascending row order
    (locality in a file). After every read a memory map's pages are given back (madvise DONTNEED; the kernel keeps
    them in its page cache), so resident memory does not grow with the passes over a file larger than RAM: one
    fault can map far more than the row it reads (2 MiB where the page cache holds large folios), so a batch of
    random rows would otherwise leave most of the file mapped within a few batches."""

    def __init__(self, X: np.ndarray, mean: np.ndarray | None = None, std: np.ndarray | None = None,
                 index: np.ndarray | None = None):
        self.X, self.mean, self.std = X, mean, std
        self.index = np.arange(len(X)) if index is None else np.asarray(index)
        self.mapped = mapped_file(X)

    def __len__(self) -> int:
        return len(self.index)

    @property
    def shape(self) -> tuple[int, int]:
        return len(self.index), self.X.shape[1]

    def subset(self, index: np.ndarray) -> Rows:
        """The rows at positions `index` of these rows, standardised alike."""
        return Rows(self.X, self.mean, self.std, self.index[index])

    def __getitem__(self, key: slice | np.ndarray) -> np.ndarray:
        """(m, d) float32 rows at the positions of a slice or an index array."""
        rows = self.index[key]
        order = np.argsort(rows, kind="stable")
        out = np.empty((len(rows), self.X.shape[1]), np.float32)
        out[order] = self.X[rows[order]]
        if self.mapped is not None:
            self.mapped.madvise(mmap.MADV_DONTNEED)
        if self.mean is not None:
            out -= self.mean
            out /= self.std
        return out


def training_statistics(X: np.ndarray, train: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """float32 mean and standard deviation (1 for a constant feature) of the rows `train` of X, read in chunks: two
    passes accumulating in row order in float32, bitwise what numpy's X[train].mean(0) and .std(0) give in RAM (float64
    sums would move the in-memory results in the last bits); at 10^6 rows a float32 running sum is still good to
    about sqrt(n) eps ~ 1e-4 relative."""
    rows = Rows(X, index=train)
    n = np.float32(len(rows))
    mean = running_sum(rows, lambda x: x) / n
    std = np.sqrt(running_sum(rows, lambda x: np.square(x - mean)) / n)
    std[std < 1e-8] = 1.0
    return mean, std


def running_sum(rows: Rows, f) -> np.ndarray:
    """The float32 sum over all rows of f(rows), chunk by chunk, each chunk added row by row to the running sum
    (numpy's order for a sum along axis 0, so the result does not depend on the chunk size)."""
    total = None
    step = chunk_rows(rows.shape[1])
    for start in range(0, len(rows), step):
        x = f(rows[start:start + step])
        total = (x if total is None else np.concatenate([total, x])).sum(axis=0, keepdims=True)
    return total[0]


def standardised_rows(X: np.ndarray, train: np.ndarray) -> Rows:
    """Every row of X, standardised to zero mean and unit variance with the statistics of the training rows only."""
    return Rows(X, *training_statistics(X, train))


def standardise(X: np.ndarray, train: np.ndarray) -> np.ndarray:
    """standardised_rows as one float32 array in RAM."""
    return standardised_rows(X, train)[:]


# ----------------------------------------------------------------------------- command line

def main(argv: list[str] | None = None) -> int:
    """`python data.py pack --root_dir DIR --out PACKED [--dtype float16|float32]`; bad input: one line, status 2."""
    from arguments import ArgError, HelpFormatter, Parser  # argparse errors as one line, as main.py prints them
    p = Parser(prog="data.py", description="Convert embeddings once into a form main.py reads.")
    sub = p.add_subparsers(dest="command", required=True)
    pack = sub.add_parser("pack", help="a per-class folder ROOT/<class>/<item>.npy -> a packed, memory-mapped folder",
                          formatter_class=HelpFormatter)
    pack.add_argument("--root_dir", required=True, help="ROOT/<class>/<item>.npy embeddings")
    pack.add_argument("--out", required=True, help="new folder: features.npy, labels.npy, items.txt, pack.json")
    pack.add_argument("--dtype", choices=PACK_DTYPES, default="float16", help="stored precision")
    try:
        args = p.parse_args(argv)
        pack_folder(args.root_dir, args.out, args.dtype)
    except (ArgError, DataError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"packed {args.root_dir} into {args.out} ({args.dtype}); train with --root_dir {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
