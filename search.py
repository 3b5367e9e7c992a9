"""Nearest database items of a query under a trained run's hash codes.

    python search.py --checkpoint logs/runs/<run_id>/checkpoint.pt --query item.npy [--topk 10]
    python search.py --checkpoint logs/runs/<run_id>/checkpoint.pt --query_index 17

The run folder holds what is needed: run.json (the settings and arguments that rebuild the model),
checkpoint.pt (the trained weights, or a closed-form baseline's fitted state) and codes.npz (the database
codes, item names, labels and the training split's standardisation statistics). A multi-label run prints every
label of an item, joined by '+', and marks the results that share a label with the query. `--query FILE.npy` is a raw
embedding of shape (d,) or (1, d), as in the per-class folders: it is standardised with the training statistics
and encoded by the model, item by item as in training. `--query_index I` takes item I of the run's query split
and its saved code. checkpoint.pt is a pickle: only search runs you trust.

`--index` picks how the database is searched (binary_index builds the faiss ones; bench/search.py measures them):
  exact       the project's ranking (evaluate.hamming_topk): Hamming distance, ties to the lower database index
  faiss-flat  faiss IndexBinaryFlat: exact distances too, but items tied at a distance may come in another order
  faiss-hnsw  faiss IndexBinaryHNSW (approximate: a graph walk, efSearch = max(HNSW_EF_SEARCH, topk))
  faiss-ivf   faiss IndexBinaryIVF (approximate: sqrt(N) lists, IVF_NPROBE_SHARE of them searched)
The faiss indexes work on whole bytes: they need a code length divisible by 8.
"""
from __future__ import annotations

import argparse
import json
import pickle
import sys
from pathlib import Path

import numpy as np

from arguments import ArgError, HelpFormatter, Parser
from data import DataError, read_vector


class SearchError(ValueError):
    """Bad input: printed as one line on stderr, exit status 2."""


INDEXES = ("exact", "faiss-flat", "faiss-hnsw", "faiss-ivf")
HNSW_M = 16                  # graph neighbours per node of IndexBinaryHNSW
HNSW_EF_SEARCH = 256         # candidates kept during a query (raised to k): recall@10 0.97 at 1M (bench/search.py)
IVF_NPROBE_SHARE = 0.05      # share of the IVF lists searched per query: recall@10 0.95 at 1M (bench/search.py)


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = Parser(description="Print the nearest database items of a query under a trained run's hash codes.",
               formatter_class=HelpFormatter)
    p.add_argument("--checkpoint", required=True, help="logs/runs/<run_id>/checkpoint.pt (or the run folder)")
    q = p.add_mutually_exclusive_group(required=True)
    q.add_argument("--query", help="a raw embedding .npy of shape (d,) or (1, d)")
    q.add_argument("--query_index", type=int, help="item I of the run's query split (uses its saved code)")
    p.add_argument("--topk", type=int, default=10, help="number of database items to print")
    p.add_argument("--index", choices=INDEXES, default="exact",
                   help="exact: the project's Hamming ranking; faiss-flat: IndexBinaryFlat (exact distances); "
                        "faiss-hnsw, faiss-ivf: approximate faiss indexes (see the module docstring)")
    args = p.parse_args(argv)
    if args.topk < 1:
        raise ArgError(f"--topk {args.topk}: must be at least 1")
    return args


# ----------------------------------------------------------------------------- the run

class Run:
    """A finished run: its settings, arguments and saved codes."""

    def __init__(self, checkpoint: str | Path):
        path = Path(checkpoint)
        if path.is_dir():
            path = path / "checkpoint.pt"
        self.checkpoint, self.dir = path, path.parent
        if not path.is_file():
            raise SearchError(f"--checkpoint {checkpoint}: no such file")
        try:
            record = json.loads((self.dir / "run.json").read_text())
            self.settings, self.args = record["settings"], record["args"]
        except OSError:
            raise SearchError(f"{self.dir / 'run.json'}: missing (is {self.dir} a finished run of main.py?)")
        except (ValueError, KeyError, TypeError):
            raise SearchError(f"{self.dir / 'run.json'}: not a run record of main.py")
        try:
            with np.load(self.dir / "codes.npz", allow_pickle=False) as z:
                self.codes = {key: z[key] for key in z.files}
        except OSError:
            raise SearchError(f"{self.dir / 'codes.npz'}: missing (is {self.dir} a finished run of main.py?)")
        except (ValueError, EOFError) as e:
            raise SearchError(f"{self.dir / 'codes.npz'}: unreadable ({e})")
        needed = {"db_codes", "n_bits", "db_labels", "db_items", "classes", "query_codes", "query_labels",
                  "query_items"}
        missing = sorted(needed - set(self.codes))
        if missing:
            raise SearchError(f"{self.dir / 'codes.npz'}: lacks {', '.join(missing)}")
        self.n_bits = int(self.codes["n_bits"])
        self.method, self.task = self.settings["method"], self.settings.get("task", "-")
        self.classes = [str(c) for c in self.codes["classes"]]

    @property
    def name(self) -> str:
        what = f"hagcn-{self.task}" if self.method == "hagcn" else self.method
        return f"run {self.dir.name} ({what}, {self.n_bits} bits, {self.settings.get('dataset')})"

    def class_name(self, label: int) -> str:
        return self.classes[label] if 0 <= label < len(self.classes) else str(label)

    def label_names(self, label: np.ndarray) -> str:
        """The class name of an integer label, or every class of a multi-hot row joined by '+'."""
        if np.ndim(label) == 0:
            return self.class_name(int(label))
        return "+".join(self.class_name(int(c)) for c in np.flatnonzero(label))


    def standardise(self, v: np.ndarray) -> np.ndarray:
        """One raw embedding, standardised as data.standardise did the run's data (same float32 operations)."""
        if "train_mean" not in self.codes or "train_std" not in self.codes:
            raise SearchError(f"{self.dir / 'codes.npz'}: no standardisation statistics (the run predates them); "
                              f"use --query_index, or re-run it with main.py --force")
        mean, std = self.codes["train_mean"], self.codes["train_std"]
        if v.shape != mean.shape:
            raise SearchError(f"--query: embedding of dimension {v.shape[0]}, but the run was trained on "
                              f"dimension {mean.shape[0]}")
        return np.ascontiguousarray((v.astype(np.float32) - mean) / std, dtype=np.float32)

    def encode(self, x: np.ndarray) -> np.ndarray:
        """(1, n_bits) {0,1} uint8 code of one standardised embedding, by the trained model."""
        import torch
        try:
            state = torch.load(self.checkpoint, map_location="cpu", weights_only=False)
        except (pickle.UnpicklingError, EOFError, RuntimeError, ValueError, AttributeError) as e:
            raise SearchError(f"{self.checkpoint}: not a readable checkpoint ({type(e).__name__})")
        if not isinstance(state, dict):
            raise SearchError(f"{self.checkpoint}: not a checkpoint of main.py")
        if "state" in state:  # closed-form baseline: its fitted attributes
            import baselines
            if self.method not in baselines.CLOSED_FORM:
                raise SearchError(f"{self.checkpoint}: closed-form state for unknown method {self.method!r}")
            coder = baselines.CLOSED_FORM[self.method]()
            coder.__dict__.update(state["state"])
            bits = coder.encode(x[None])
        elif "model" in state:
            import main
            from train import encode
            args = argparse.Namespace(**self.args)
            if self.method == "hagcn":
                model, _ = main.build_hagcn(self.task, self.n_bits, x.shape[0], args)
            else:
                import baselines
                model, _ = baselines.build_deep(self.method, x.shape[0], self.n_bits, len(self.classes), args)
            try:
                model.load_state_dict(state["model"])
            except RuntimeError as e:
                raise SearchError(f"{self.checkpoint}: weights do not fit the model of run.json "
                                  f"({str(e).splitlines()[0]})")
            bits = encode(model, torch.from_numpy(x[None]))
        else:
            raise SearchError(f"{self.checkpoint}: not a checkpoint of main.py (no 'model' or 'state')")
        bits = np.asarray(bits, dtype=np.uint8)
        if bits.shape != (1, self.n_bits):
            raise SearchError(f"{self.checkpoint}: the model gives {bits.shape[1]}-bit codes, codes.npz has "
                              f"{self.n_bits}")
        return bits


def share_label(a: np.ndarray, b: np.ndarray) -> bool:
    """Relevance as in evaluate.py: equal integer labels, or multi-hot rows with a class in common."""
    return bool(a == b) if np.ndim(a) == 0 else bool(np.any((a > 0) & (b > 0)))


def ivf_lists(n: int) -> int:
    """Inverted lists of IndexBinaryIVF for n codes: sqrt(n), at most n / 39 (faiss's k-means wants 39 per list)."""
    return max(1, min(int(np.sqrt(n)), n // 39))


def binary_index(db_packed: np.ndarray, n_bits: int, kind: str, nprobe: int | None = None,
                 ef_search: int = HNSW_EF_SEARCH):
    """A filled faiss binary index of `kind` (faiss-flat, faiss-hnsw, faiss-ivf) over np.packbits codes
    (n, n_bits / 8); `nprobe` (faiss-ivf, default IVF_NPROBE_SHARE of the lists) and `ef_search` (faiss-hnsw)."""
    import faiss
    if n_bits % 8:
        raise SearchError(f"--index {kind}: faiss binary indexes need a code length divisible by 8, the run has "
                          f"{n_bits} bits (use --index exact)")
    db_packed = np.ascontiguousarray(db_packed, dtype=np.uint8)
    if kind == "faiss-flat":
        index = faiss.IndexBinaryFlat(n_bits)
    elif kind == "faiss-hnsw":
        index = faiss.IndexBinaryHNSW(n_bits, HNSW_M)
        index.hnsw.efSearch = ef_search
    elif kind == "faiss-ivf":
        nlist = ivf_lists(len(db_packed))
        index = faiss.IndexBinaryIVF(faiss.IndexBinaryFlat(n_bits), n_bits, nlist)
        index.cp.seed = 0
        sample = np.random.default_rng(0).choice(len(db_packed), min(len(db_packed), 50 * nlist), replace=False)
        index.train(db_packed[np.sort(sample)])
        index.nprobe = nprobe or max(1, round(IVF_NPROBE_SHARE * nlist))
    else:
        raise SearchError(f"--index {kind}: not one of {', '.join(INDEXES[1:])}")
    index.add(db_packed)
    return index


def nearest(index, query_packed: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(indices int64 Q x k, distances int32 Q x k) from a faiss binary index, nearest first; an approximate index
    that finds fewer than k items pads with index -1."""
    if hasattr(index, "hnsw"):
        index.hnsw.efSearch = max(index.hnsw.efSearch, k)
    distances, indices = index.search(np.ascontiguousarray(query_packed, dtype=np.uint8), k)
    return indices, distances


def search(run: Run, query_bits: np.ndarray, topk: int, kind: str = "exact") -> tuple[np.ndarray, np.ndarray]:
    """(database positions, Hamming distances) of the topk nearest items: by (distance, index) for `exact`, else
    from binary_index(kind) (an approximate index may return fewer)."""
    from evaluate import from_packbits, hamming_topk
    k = min(topk, len(run.codes["db_labels"]))
    if kind == "exact":
        indices, distances = hamming_topk(query_bits, from_packbits(run.codes["db_codes"], run.n_bits), k)
    else:
        index = binary_index(run.codes["db_codes"], run.n_bits, kind)
        indices, distances = nearest(index, np.packbits(query_bits, axis=1), k)
    found = indices[0] >= 0
    return indices[0][found], distances[0][found]


def main(argv: list[str] | None = None) -> int:
    try:
        args = parse(argv)
        run = Run(args.checkpoint)
        if args.query_index is not None:
            n_query = len(run.codes["query_labels"])
            if not 0 <= args.query_index < n_query:
                raise SearchError(f"--query_index {args.query_index}: the run's query split has items 0..{n_query - 1}")
            query_bits = np.unpackbits(run.codes["query_codes"][args.query_index:args.query_index + 1],
                                       axis=1)[:, :run.n_bits]
            label = run.codes["query_labels"][args.query_index]
            about = (f"query item {args.query_index}: {run.codes['query_items'][args.query_index]} "
                     f"(label {run.label_names(label)})")
        else:
            query_bits = run.encode(run.standardise(read_vector(Path(args.query))))
            label, about = None, f"query {args.query}"
        indices, distances = search(run, query_bits, args.topk, args.index)
    except (ArgError, SearchError, DataError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except OSError as e:
        print(f"error: {e.filename or ''}: {e.strerror or e}", file=sys.stderr)
        return 2
    code = "".join(map(str, query_bits[0]))
    print(f"{run.name}\n{about}, code {code}")
    items, labels = run.codes["db_items"], run.codes["db_labels"]
    width = max(len("item"), *(len(str(items[i])) for i in indices))
    names = [run.label_names(labels[i]) for i in indices]
    lw = max(len("label"), *map(len, names))
    same = "  same class" if labels.ndim == 1 else "  shares a label"
    print(f"{'rank':>4}  {'item':<{width}}  {'label':<{lw}}  distance")
    for rank, (i, d, name) in enumerate(zip(indices, distances, names), 1):
        mark = same if label is not None and share_label(labels[i], label) else ""
        print(f"{rank:>4}  {str(items[i]):<{width}}  {name:<{lw}}  {int(d):>8}{mark}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
