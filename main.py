"""Train every requested method x filter x code length x fold on one dataset and print one mAP table.

    python main.py                                   # HAGCN, every filter, 16..128 bits, on digits
    python main.py --num_epochs 200 --batch_size 64  # the paper repo's flags keep working
    python main.py --method all --dataset fashion_mnist --exp_hash_len 16 32 64
"""
from __future__ import annotations

import hashlib
import math
import os
import platform
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from functools import cache, partial
from pathlib import Path
from typing import Callable

import numpy as np
import torch

import baselines
import distributed
from arguments import ArgError, parse_args
from data import (DataError, Dataset, Rows, RowSource, Split, chunk_rows, constant_features, load_dataset, make_splits,
                  standardised_rows)
from evaluate import evaluate_codes, mean_average_precision
from graph import approximate_settings, diffusion_map, knn_graph
from losses import hagcn_loss
from model import HAGCN, HashModel
from results import OutputError, ResultsLog, atomic_write, format_table, is_writer, run_id_of, train_id_of
from train import CheckpointError, LossFn, Trained, TrainingDiverged, Validation, atomic_save, encode, train

REPO = Path(__file__).resolve().parent
RUN_KEYS = ["dataset", "root_dir", "subsample", "split", "folds", "query_per_class", "num_train", "k", "knn",
            "hidden", "hash_head", "graph_source", "alpha", "alpha_max", "tau", "loss_form", "sim_target",
            "lambda_", "recon_weight", "num_epochs", "batch_size", "batch_group", "neighbour_pool", "graph_edges",
            "diffusion_dims", "diffusion_t", "lr", "lr_schedule", "warmup_epochs", "precision", "seed", "val_queries",
            "val_db", "val_every", "select_epoch", "early_stop", "topk", "metric", "ties"]


# ----------------------------------------------------------------------------- one run

def run_settings(args, method: str, task: str, bits: int, fold: int) -> dict:
    """Everything that determines a run's result; its hash names the run and detects finished runs."""
    settings = {key: getattr(args, key) for key in RUN_KEYS}
    if args.dataset == "matrix":  # only then, so that the run ids of the other datasets stay as they were
        settings.update(features=args.features, labels=args.labels)
    settings.update(method=method, task=task, hash_len=bits, fold=fold, **processes())
    return settings


def processes() -> dict:
    """{'processes': N} under a launch of N > 1 processes (each rank's batch graph differs, so it is another run),
    else {}, so that single-process run ids and results.csv rows stay as they were."""
    world = distributed.world_size()
    return {"processes": world} if world > 1 else {}


def reuse_trained(source: Path, run_dir: Path) -> tuple[np.ndarray, np.ndarray]:
    """Codes of an earlier run with the same training settings; its checkpoint is linked (or copied) into run_dir
    so that every run folder is complete on its own (by rank 0; every rank reads the codes)."""
    with np.load(source / "codes.npz", allow_pickle=False) as z:
        n_bits = int(z["n_bits"])
        q_bits = np.unpackbits(z["query_codes"], axis=1, count=n_bits)
        db_bits = np.unpackbits(z["db_codes"], axis=1, count=n_bits)
    if is_writer():
        target = run_dir / "checkpoint.pt"
        target.unlink(missing_ok=True)
        try:
            os.link(source / "checkpoint.pt", target)
        except OSError:
            atomic_write(target, lambda tmp: shutil.copyfile(source / "checkpoint.pt", tmp))
    return q_bits, db_bits


def build_hagcn(task: str, bits: int, d_in: int, args) -> tuple[HAGCN, partial]:
    model = HAGCN(d_in, args.hidden, bits, task, args.k, args.knn, args.hash_head, args.graph_source,
                  args.alpha, args.alpha_max, args.tau, reconstruct=args.recon_weight > 0)
    return model, partial(hagcn_loss, lambda_=args.lambda_, form=args.loss_form, target=args.sim_target,
                          recon_weight=args.recon_weight)


def uses_diffusion(args) -> bool:
    return args.graph_edges == "diffusion" or (args.sim_target == "diffusion" and args.loss_form == "ours")


def graph_width(args) -> int:
    """Neighbours per row of the global graph: enough for neighbourhood batches, the batch edges and the diffusion
    map; 0 when nothing needs the graph."""
    pool = args.neighbour_pool if args.batch_group > 1 else 0
    return max(pool, args.knn if args.graph_edges == "global" or uses_diffusion(args) else 0)


@dataclass
class GlobalGraph:
    """The global neighbourhood graph of a fold's training rows (CPU tensors): `neighbours` (n, k), nearest first,
    and `coords` (n, c), the diffusion coordinates (None when no option uses them)."""
    neighbours: torch.Tensor | None
    coords: torch.Tensor | None


def rows_digest(X: Rows | np.ndarray) -> str:
    """sha1 of the rows as one C-contiguous float32 array, read in chunks."""
    h = hashlib.sha1()
    step = chunk_rows(X.shape[1])
    for start in range(0, len(X), step):
        h.update(np.ascontiguousarray(X[start:start + step], dtype=np.float32).view(np.uint8))
    return h.hexdigest()


def global_graph(X_train: Rows | np.ndarray, args, cache_dir: Path | None = None) -> GlobalGraph:
    """Each training row's graph_width(args) nearest training rows (cosine, faiss: graph.knn_graph) and the diffusion
    map of the --knn graph (graph.diffusion_map). Kept in `cache_dir` under a hash of the rows and the settings, so
    every filter, code length and later run of a fold shares one build; under torchrun rank 0 builds it and the
    other ranks read the cache. X_train is read in row slices."""
    k = min(graph_width(args), len(X_train) - 1)
    if k < 1:
        return GlobalGraph(None, None)
    dims = (args.diffusion_dims, args.diffusion_t, args.knn) if uses_diffusion(args) else None
    if cache_dir is None:
        return as_global_graph(graph_arrays(X_train, k, dims, args))
    key = f"{rows_digest(X_train)} {k} {dims}"
    approximate = approximate_settings(len(X_train))
    if approximate is not None:  # exact graphs keep their keys (and caches)
        key += f" {approximate}"
    path = cache_dir / f"graph-{hashlib.sha1(key.encode()).hexdigest()[:16]}.npz"
    arrays = None
    if is_writer() and not path.is_file():
        arrays = graph_arrays(X_train, k, dims, args)
        try:
            cache_dir.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise OutputError(f"{cache_dir}: cannot create ({e.strerror})") from e
        atomic_write(path, lambda tmp: np.savez(tmp, **arrays))
    distributed.barrier()  # the other ranks wait for rank 0's cache
    if arrays is None:
        with np.load(path) as z:
            arrays = {name: z[name] for name in z.files}
    return as_global_graph(arrays)


def graph_arrays(X_train: Rows | np.ndarray, k: int, dims: tuple | None, args) -> dict[str, np.ndarray]:
    """The arrays global_graph caches: 'neighbours' and, when `dims` is given, 'coords'."""
    t0 = time.perf_counter()
    arrays = {"neighbours": knn_graph(X_train, k)}
    if dims is not None:
        arrays["coords"] = diffusion_map(arrays["neighbours"][:, :min(args.knn, k)], args.diffusion_dims,
                                         args.diffusion_t)
    print(f"global graph of {len(X_train)} training rows ({k}-NN{', diffusion map' if dims else ''}): "
          f"{time.perf_counter() - t0:.1f} s", file=sys.stderr)
    return arrays


def as_global_graph(arrays) -> GlobalGraph:
    return GlobalGraph(torch.from_numpy(arrays["neighbours"]),
                       torch.from_numpy(arrays["coords"]) if "coords" in arrays else None)


@dataclass
class ValidationSet:
    """A fold's labelled validation part of its training split (data.with_validation), standardised, in RAM."""
    query: np.ndarray
    db: np.ndarray
    query_labels: np.ndarray
    db_labels: np.ndarray
    topk: int | None

    def map_of(self, q_bits: np.ndarray, db_bits: np.ndarray) -> float:
        """Tie-aware mAP@topk of these codes, relevance = a shared label (the table's metric, whatever --metric)."""
        return mean_average_precision(q_bits, db_bits, self.query_labels, self.db_labels, self.topk, ties="expected")

    def score(self, model: HashModel) -> float:
        return self.map_of(encode(model, self.query), encode(model, self.db))


def validation_set(rows: Rows, y: np.ndarray, split: Split, args) -> ValidationSet | None:
    if not len(split.val_query):
        return None
    return ValidationSet(rows[split.val_query], rows[split.val_db], y[split.val_query], y[split.val_db],
                         args.topk or None)


def fit_and_encode(method: str, task: str, bits: int, X: Rows, y: np.ndarray, split: Split,
                   n_classes: int, args, run_dir: Path, desc: str, graph: Callable[[], GlobalGraph],
                   val: ValidationSet | None = None) -> tuple[np.ndarray, np.ndarray, Trained]:
    """Fit on the training split only; return the query codes, database codes and what training reported (a
    closed-form fit: its seconds, no epochs, and its validation mAP). `graph()` gives the training rows' global
    neighbourhood graph (built once per fold, by the first deep run); `val` is scored during training.
    Deep methods read X's rows batch by batch; the closed-form baselines take their split's rows in RAM."""
    if method in baselines.CLOSED_FORM:
        t0 = time.perf_counter()
        coder = baselines.CLOSED_FORM[method]().fit(X[split.train], bits, args.seed)
        seconds = time.perf_counter() - t0
        if is_writer():
            atomic_save({"method": method, "state": vars(coder)}, run_dir / "checkpoint.pt")
        val_map = val.map_of(coder.encode(val.query), coder.encode(val.db)) if val is not None else None
        return coder.encode(X[split.query]), coder.encode(X[split.db]), Trained(seconds, 0, 0, val_map)
    torch.manual_seed(args.seed)
    if method == "hagcn":
        model, loss_fn = build_hagcn(task, bits, X.shape[1], args)
    else:
        model, loss_fn = baselines.build_deep(method, X.shape[1], bits, n_classes, args)
    model.to(torch.device(args.device))
    y_train = torch.from_numpy(y[split.train]).to(args.device)
    trained = train_from_args(model, loss_fn, X.subset(split.train), y_train, args, graph(), desc, run_dir, val=val)
    return encode(model, X.subset(split.query)), encode(model, X.subset(split.db)), trained


def train_from_args(model: HashModel, loss_fn: LossFn, X_train: RowSource, y_train: torch.Tensor, args,
                    g: GlobalGraph, desc: str, run_dir: Path | None = None, num_epochs: int | None = None,
                    val: ValidationSet | None = None) -> Trained:
    """train.train as the flags in `args` set it up (the one place that maps them): neighbourhood batches from the
    global graph `g`, its edges and diffusion coordinates where the flags use them (on y_train's device), the rate
    schedule, with `val` the validation (--val_every, --select_epoch, --early_stop), and with `run_dir` a checkpoint
    and epochs.csv there."""
    device = y_train.device
    validation = None if val is None else Validation(val.score, args.val_every, args.select_epoch, args.early_stop)
    return train(model, loss_fn, X_train, y_train, num_epochs=num_epochs or args.num_epochs,
                 batch_size=args.batch_size, lr=args.lr, seed=args.seed, desc=desc,
                 checkpoint=run_dir / "checkpoint.pt" if run_dir else None, resume=args.resume,
                 neighbours=g.neighbours[:, :args.neighbour_pool] if args.batch_group > 1 else None,
                 group=args.batch_group,
                 edges=g.neighbours[:, :args.knn].to(device) if args.graph_edges == "global" else None,
                 coords=g.coords.to(device) if g.coords is not None and uses_diffusion(args) else None,
                 history=run_dir / "epochs.csv" if run_dir else None, tensorboard=args.tensorboard,
                 precision=args.precision, lr_schedule=args.lr_schedule, warmup_epochs=args.warmup_epochs,
                 validation=validation)


def save_codes(path: Path, data: Dataset, split: Split, q_bits: np.ndarray, db_bits: np.ndarray, rows: Rows) -> None:
    """Packed bits (np.packbits along each row) with labels and item names, for reuse by other tools, and the
    training split's standardisation statistics (`rows`' mean and std) to encode new queries."""
    atomic_write(path, lambda tmp: np.savez(
        tmp, query_codes=np.packbits(q_bits, axis=1), db_codes=np.packbits(db_bits, axis=1), n_bits=q_bits.shape[1],
        query_labels=data.y[split.query], db_labels=data.y[split.db], query_index=split.query, db_index=split.db,
        query_items=np.asarray([data.items[i] for i in split.query]),
        db_items=np.asarray([data.items[i] for i in split.db]), classes=np.asarray(data.classes),
        train_mean=rows.mean, train_std=rows.std))


def environment() -> dict:
    """Package versions and the git commit, recorded with every run."""
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True,
                                timeout=10).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        commit = None
    import scipy
    import sklearn
    return {"python": platform.python_version(), "torch": torch.__version__, "numpy": np.__version__,
            "scipy": scipy.__version__, "scikit-learn": sklearn.__version__, "git_commit": commit}


# ----------------------------------------------------------------------------- the grid

@dataclass(frozen=True)
class Cell:
    """One grid cell: a method (HAGCN with one filter) at one code length on one fold."""
    method: str
    task: str
    bits: int
    fold: int

    @property
    def desc(self) -> str:
        name = f"hagcn-{self.task}" if self.method == "hagcn" else self.method
        return f"{name} {self.bits} bits fold {self.fold}"


@dataclass
class Fold:
    """One fold's split, its standardised rows, (lazily) its training rows' global neighbourhood graph, and its
    validation set (None with --val_queries 0)."""
    split: Split
    rows: Rows
    graph: Callable[[], GlobalGraph]
    val: ValidationSet | None = None


def load_data(args) -> tuple[Dataset, list[Split]]:
    """The dataset and its folds, checked before anything is written; fills the default --knn."""
    data = load_dataset(args.dataset, args.root_dir, args.subsample, args.seed, features=args.features,
                        labels=args.labels, names=args.names)
    n_classes = len(data.classes)
    source = args.features or args.root_dir or args.dataset
    if n_classes < 2:
        flag = "--labels" if args.features else "--root_dir" if args.root_dir else "--dataset"
        raise DataError(f"{flag} {source}: has {n_classes} class; mAP needs at least two classes")
    if args.num_cls is not None and args.num_cls != n_classes:
        raise DataError(f"--num_cls {args.num_cls}: {source} has {n_classes} classes")
    if args.dataset in ("folder", "matrix"):
        check_variance(data, "--features" if args.features else "--root_dir", source)
    pca_based = [m for m in args.method if m in baselines.ONE_BIT_PER_COMPONENT]
    if pca_based and max(args.exp_hash_len) > data.X.shape[1]:
        raise DataError(f"--exp_hash_len {max(args.exp_hash_len)}: {pca_based[0]} takes one bit per principal "
                        f"component, and {source} has {data.X.shape[1]}-d features")
    if args.knn is None:
        args.knn = min(n_classes, args.batch_size - 1)
    splits = make_splits(data.y, args.split, args.folds, args.seed, args.query_per_class, args.num_train,
                         args.val_queries, args.val_db)
    if args.val_every is None:
        args.val_every = validation_every(splits[0])
    for split in splits:
        if min(len(split.train), len(split.query), len(split.db)) < 2:
            raise DataError(f"{args.dataset}: {len(data.y)} items are too few for --split {args.split} "
                            f"(train {len(split.train)}, query {len(split.query)}, database {len(split.db)})")
    return data, splits


def check_variance(data: Dataset, flag: str, source: str) -> None:
    """A user's features must vary: all constant, every item is identical and every method gets one code for all
    (a table of equal scores), so that is an error; some constant columns are a one-line warning."""
    n_const, d = constant_features(data.X), data.X.shape[1]
    if n_const == d:
        raise DataError(f"{flag} {source}: every feature is constant (all {len(data.X)} items are identical); "
                        "no code can tell them apart")
    if n_const:
        note(f"warning: {flag} {source}: {n_const} of {d} features are constant over all items (they carry no "
             "information)")


def validation_every(split: Split) -> int:
    """The default --val_every: a validation encodes the validation rows once (a forward pass), an epoch passes
    every training row forward and back (at least 3 forward passes' worth), so scoring every k epochs costs at most
    V / (3 N k) of the training time; k = ceil(V / (0.15 N)) keeps that under 5% (1 on Fashion-MNIST, 8 on digits)."""
    rows = len(split.val_query) + len(split.val_db)
    return max(1, math.ceil(rows / (0.15 * len(split.train)))) if len(split.val_query) else 1


def grid_cells(args, fold: int) -> list[Cell]:
    return [Cell(method, task, bits, fold) for method in args.method
            for task in (args.task if method == "hagcn" else ["-"]) for bits in args.exp_hash_len]


def result_row(cell: Cell, args, data: Dataset, metrics: dict, trained: Trained, run_id: str) -> dict:
    return {"dataset": data.name, "method": cell.method, "task": cell.task, "k": args.k, "knn": args.knn,
            "tau": args.tau, "hash_len": cell.bits, "topk": args.topk, "ties": args.ties,
            "map": f"{metrics['map']:.6f}", "map_index": f"{metrics['map_index']:.6f}",
            "map_expected": f"{metrics['map_expected']:.6f}",
            "precision_at_k": f"{metrics['precision_at_k']:.6f}", "recall_at_k": f"{metrics['recall_at_k']:.6f}",
            "precision_r2": f"{metrics['precision_r2']:.6f}", "train_seconds": f"{trained.seconds:.2f}",
            "val_map": "" if trained.val_map is None else f"{trained.val_map:.6f}",
            "epochs_trained": trained.epochs, "kept_epoch": trained.kept_epoch, "select_epoch": args.select_epoch,
            "early_stop": args.early_stop, "lr_schedule": args.lr_schedule, "warmup_epochs": args.warmup_epochs,
            "recon_weight": args.recon_weight,
            "seed": args.seed, "fold": cell.fold, "split": args.split, "num_epochs": args.num_epochs,
            "batch_size": args.batch_size, "batch_group": args.batch_group, "graph_edges": args.graph_edges,
            "lr": args.lr, "precision": args.precision,
            "hash_head": args.hash_head, "loss_form": args.loss_form, "sim_target": args.sim_target,
            "lambda_": args.lambda_, "supervised": cell.method in baselines.SUPERVISED, "metric": args.metric,
            **processes(), "run_id": run_id, "finished": time.strftime("%Y-%m-%dT%H:%M:%S")}


def run_cell(cell: Cell, fold: Fold, data: Dataset, args, log: ResultsLog, env: dict) -> dict:
    """Train (or skip, or re-evaluate the codes of) one grid cell; returns its results.csv row. The run folder's
    checkpoint is written by train.train, its codes, run.json and results.csv row by log.add."""
    settings = run_settings(args, cell.method, cell.task, cell.bits, cell.fold)
    run_id, train_id = run_id_of(settings), train_id_of(settings)
    row = log.finished(run_id, args.force)
    if row is not None:
        note(f"skip {cell.desc}: already in {log.csv} (run {run_id}; --force to redo)")
        return row
    run_dir = log.dir / "runs" / run_id
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise OutputError(f"{run_dir}: cannot create ({e.strerror})") from e
    source = log.trained_in(train_id, args.force)
    if source is not None:
        note(f"{cell.desc}: evaluating the codes of run {source.name} (same training settings)")
        q_bits, db_bits = reuse_trained(source, run_dir)
        trained = trained_of(log.done[source.name])
    else:
        q_bits, db_bits, trained = fit_and_encode(cell.method, cell.task, cell.bits, fold.rows, data.y, fold.split,
                                                  len(data.classes), args, run_dir, cell.desc, fold.graph, fold.val)
    split = fold.split
    metrics = evaluate_codes(q_bits, db_bits, data.y[split.query], data.y[split.db], args.topk or None,
                             relevance=args.metric, ties=args.ties)
    row = result_row(cell, args, data, metrics, trained, run_id)
    record = {"settings": settings, "args": vars(args), "environment": env, "trained_in": (source or run_dir).name,
              "metrics": {k: v.tolist() if isinstance(v, np.ndarray) else v for k, v in metrics.items()}}
    log.add(row, train_id, run_dir, record,
            partial(save_codes, run_dir / "codes.npz", data, split, q_bits, db_bits, fold.rows))
    note(f"{cell.desc}: mAP@{args.topk or 'all'} {metrics['map']:.4f} ({trained.seconds:.1f} s{epochs_note(trained)})")
    return row


def trained_of(row: dict) -> Trained:
    """What training reported for a run, read back from its results.csv row."""
    return Trained(float(row["train_seconds"]), int(row.get("epochs_trained") or 0), int(row.get("kept_epoch") or 0),
                   float(row["val_map"]) if row.get("val_map") else None)


def epochs_note(trained: Trained) -> str:
    """', 37 epochs, kept 30, val 0.7123' for a summary line ('' for a closed-form fit without validation)."""
    epochs = f", {trained.epochs} epochs" if trained.epochs else ""
    kept = f", kept {trained.kept_epoch}" if trained.kept_epoch != trained.epochs else ""
    val = f", val {trained.val_map:.4f}" if trained.val_map is not None else ""
    return epochs + kept + val


def run_grid(args) -> list[dict]:
    """Every cell of the grid, fold by fold; returns their results.csv rows."""
    data, splits = load_data(args)
    log_dir = Path(args.log_dir)
    log_dir.mkdir(parents=True, exist_ok=True)  # only now that the data and splits are known to be good
    env = environment()
    log = ResultsLog(log_dir, {"args": vars(args), "environment": env})
    distributed.barrier()  # every rank has read results.csv before rank 0 adds to it
    rows = []
    for index, split in enumerate(splits):
        X = standardised_rows(data.X, split.train)
        fold = Fold(split, X, cache(partial(global_graph, X.subset(split.train), args, log_dir / "graphs")),
                    validation_set(X, data.y, split, args))
        rows += [run_cell(cell, fold, data, args, log, env) for cell in grid_cells(args, index)]
    return rows


def data_label(args) -> str:
    """What the user gave, for titles: the feature file's name (X.npy) or the folder's (stanford_cars) with the kind
    in brackets, or the built-in dataset's name."""
    if args.dataset == "matrix":
        return f"{Path(args.features).name} (matrix)"
    if args.dataset == "folder":
        return f"{Path(args.root_dir).resolve().name} (folder)"
    return args.dataset


def table_title(args) -> str:
    folds = f", {args.folds} folds" if args.folds > 1 else ""
    return (f"mAP@{args.topk or 'all'} on {data_label(args)} (split {args.split}{folds}, "
            f"{args.num_epochs} epochs at {args.lr_schedule} rate {args.lr:g}, seed {args.seed}, ties: {args.ties})")


def note(message: str) -> None:
    """A line on stderr (progress, or an error that every rank meets alike), from rank 0 only under torchrun."""
    if is_writer():
        print(message, file=sys.stderr)


def run(argv: list[str] | None = None) -> tuple[int, list[dict], object]:
    """main.py's job: (exit status, the grid's results.csv rows, the parsed flags); prints the table. Started by
    torchrun, the process joins the group first (distributed.join) and rank 0 alone prints and writes."""
    args = None
    try:
        args = parse_args(argv)
        if distributed.launched():
            args.device = distributed.join(args.device)
        rows = run_grid(args)
    except (ArgError, DataError, CheckpointError) as e:
        note(f"error: {e}")  # every rank of a torchrun launch meets the same bad input: one line, from rank 0
        return 2, [], args
    except TrainingDiverged as e:
        print(f"error: {e}; no result row was written", file=sys.stderr)
        return 1, [], args
    except OutputError as e:
        print(f"error: {e}; finished runs are in results.csv, add --resume to continue", file=sys.stderr)
        return 1, [], args
    except KeyboardInterrupt:
        note("interrupted: finished runs are in results.csv; add --resume to continue from the last checkpoint")
        return 130, [], args
    finally:
        distributed.leave()
    if is_writer():
        print(format_table(rows, args.exp_hash_len, table_title(args)))
    return 0, rows, args


def main(argv: list[str] | None = None) -> int:
    return run(argv)[0]


if __name__ == "__main__":
    sys.exit(main())
