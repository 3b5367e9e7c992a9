"""Train every requested method x filter x code length x fold on one dataset and print one mAP table.

    python main.py                                   # HAGCN, every filter, 16..128 bits, on digits
    python main.py --num_epochs 200 --batch_size 64  # the paper repo's flags keep working
    python main.py --method all --dataset fashion_mnist --exp_hash_len 16 32 64
"""
from __future__ import annotations

import csv
import hashlib
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from functools import cache, partial
from pathlib import Path
from typing import Callable

import numpy as np
import torch

import baselines
from arguments import ArgError, parse_args
from data import DataError, Dataset, Split, load_dataset, make_splits, standardise
from evaluate import evaluate_codes
from graph import knn_indices
from losses import hagcn_loss
from model import HAGCN
from train import CheckpointError, TrainingDiverged, atomic_save, encode, train

REPO = Path(__file__).resolve().parent
CSV_COLUMNS = ["dataset", "method", "task", "k", "knn", "tau", "hash_len", "topk", "map", "precision_at_k",
               "recall_at_k", "precision_r2", "train_seconds", "seed", "fold", "split", "num_epochs",
               "batch_size", "batch_group", "lr", "hash_head", "loss_form", "sim_target", "lambda_", "supervised",
               "metric", "run_id", "finished"]
RUN_KEYS = ["dataset", "root_dir", "subsample", "split", "folds", "query_per_class", "num_train", "k", "knn",
            "hidden", "hash_head", "graph_source", "alpha", "alpha_max", "tau", "loss_form", "sim_target",
            "lambda_", "num_epochs", "batch_size", "batch_group", "neighbour_pool", "lr", "seed", "topk", "metric"]
EVAL_KEYS = {"topk", "metric"}  # change only the evaluation: a run differing in these reuses the trained codes


# ----------------------------------------------------------------------------- one run

def run_settings(args, method: str, task: str, bits: int, fold: int) -> dict:
    """Everything that determines a run's result; its hash names the run and detects finished runs."""
    settings = {key: getattr(args, key) for key in RUN_KEYS}
    if args.dataset == "matrix":  # only then, so that the run ids of the other datasets stay as they were
        settings.update(features=args.features, labels=args.labels)
    settings.update(method=method, task=task, hash_len=bits, fold=fold)
    return settings


def run_id_of(settings: dict) -> str:
    return hashlib.sha1(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()[:12]


def train_id_of(settings: dict) -> str:
    """Hash of the settings that determine the codes (everything but the evaluation's)."""
    return run_id_of({k: v for k, v in settings.items() if k not in EVAL_KEYS})


def trained_runs(done: dict[str, dict], log_dir: Path) -> dict[str, Path]:
    """{train_id: folder} of the finished runs in results.csv (codes.npz is written last, so it marks one)."""
    found = {}
    for row in done.values():
        folder = log_dir / "runs" / row["run_id"]
        try:
            settings = json.loads((folder / "run.json").read_text())["settings"]
        except (OSError, ValueError, KeyError):
            continue
        if (folder / "codes.npz").is_file():
            found[train_id_of(settings)] = folder
    return found


def reuse_trained(source: Path, run_dir: Path) -> tuple[np.ndarray, np.ndarray]:
    """Codes of an earlier run with the same training settings; its checkpoint is linked (or copied) into run_dir
    so that every run folder is complete on its own."""
    with np.load(source / "codes.npz", allow_pickle=False) as z:
        n_bits = int(z["n_bits"])
        q_bits = np.unpackbits(z["query_codes"], axis=1, count=n_bits)
        db_bits = np.unpackbits(z["db_codes"], axis=1, count=n_bits)
    target = run_dir / "checkpoint.pt"
    target.unlink(missing_ok=True)
    try:
        os.link(source / "checkpoint.pt", target)
    except OSError:
        shutil.copyfile(source / "checkpoint.pt", target)
    return q_bits, db_bits


def build_hagcn(task: str, bits: int, d_in: int, args) -> tuple[HAGCN, partial]:
    model = HAGCN(d_in, args.hidden, bits, task, args.k, args.knn, args.hash_head, args.graph_source,
                  args.alpha, args.alpha_max, args.tau)
    return model, partial(hagcn_loss, lambda_=args.lambda_, form=args.loss_form, target=args.sim_target)


def neighbour_pool(X_train: np.ndarray, args) -> torch.Tensor | None:
    """Each training row's --neighbour_pool nearest training rows (cosine), for neighbourhood batches
    (train.epoch_batches); None for shuffled batches (--batch_group 1)."""
    if args.batch_group <= 1 or len(X_train) < 2:
        return None
    feats = torch.from_numpy(X_train).to(args.device)
    return knn_indices(feats, min(args.neighbour_pool, len(X_train) - 1)).cpu()


def fit_and_encode(method: str, task: str, bits: int, X: np.ndarray, y: np.ndarray, split: Split,
                   n_classes: int, args, run_dir: Path, desc: str,
                   pool: Callable[[], torch.Tensor | None]) -> tuple[np.ndarray, np.ndarray, float]:
    """Fit on the training split only; return the query codes, database codes and training seconds.
    `pool()` gives the training rows' neighbour pool (computed once per fold, by the first deep run)."""
    if method in baselines.CLOSED_FORM:
        t0 = time.perf_counter()
        coder = baselines.CLOSED_FORM[method]().fit(X[split.train], bits, args.seed)
        seconds = time.perf_counter() - t0
        atomic_save({"method": method, "state": vars(coder)}, run_dir / "checkpoint.pt")
        return coder.encode(X[split.query]), coder.encode(X[split.db]), seconds
    torch.manual_seed(args.seed)
    if method == "hagcn":
        model, loss_fn = build_hagcn(task, bits, X.shape[1], args)
    else:
        model, loss_fn = baselines.build_deep(method, X.shape[1], bits, n_classes, args)
    device = torch.device(args.device)
    model.to(device)
    X_all = torch.from_numpy(X).to(device)
    y_train = torch.from_numpy(y[split.train]).to(device)
    seconds = train(model, loss_fn, X_all[torch.from_numpy(split.train).to(device)], y_train,
                    num_epochs=args.num_epochs, batch_size=args.batch_size, lr=args.lr, seed=args.seed,
                    desc=desc, checkpoint=run_dir / "checkpoint.pt", resume=args.resume, neighbours=pool(),
                    group=args.batch_group)
    to_dev = lambda idx: X_all[torch.from_numpy(idx).to(device)]
    return encode(model, to_dev(split.query)), encode(model, to_dev(split.db)), seconds


def save_codes(path: Path, data: Dataset, split: Split, q_bits: np.ndarray, db_bits: np.ndarray) -> None:
    """Packed bits (np.packbits along each row) with labels and item names, for reuse by other tools, and the
    training split's standardisation statistics (as data.standardise computes them) to encode new queries."""
    tmp = path.with_name(f".{path.stem}.tmp{os.getpid()}.npz")
    train_mean, train_std = data.X[split.train].mean(axis=0), data.X[split.train].std(axis=0)
    train_std[train_std < 1e-8] = 1.0
    np.savez(tmp, query_codes=np.packbits(q_bits, axis=1), db_codes=np.packbits(db_bits, axis=1),
             n_bits=q_bits.shape[1], query_labels=data.y[split.query], db_labels=data.y[split.db],
             query_index=split.query, db_index=split.db,
             query_items=np.asarray([data.items[i] for i in split.query]),
             db_items=np.asarray([data.items[i] for i in split.db]), classes=np.asarray(data.classes),
             train_mean=train_mean, train_std=train_std)
    os.replace(tmp, path)


def write_json(path: Path, obj: dict) -> None:
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text(json.dumps(obj, indent=2, default=str))
    os.replace(tmp, path)


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


# ----------------------------------------------------------------------------- results.csv

def read_results(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def append_result(path: Path, row: dict) -> None:
    """Rewrite results.csv with the new row through a temporary file: never half a row, old columns kept."""
    rows = read_results(path) + [row]
    columns = CSV_COLUMNS + [c for r in rows for c in r if c not in CSV_COLUMNS]
    columns = list(dict.fromkeys(columns))
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    with open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
    os.replace(tmp, path)


# ----------------------------------------------------------------------------- the table

def format_table(rows: list[dict], bits: list[int], title: str) -> str:
    """Rows = method (HAGCN: one per filter), columns = code lengths; mean +- std over folds."""
    names = list(dict.fromkeys(row_name(r) for r in rows))
    supervised = {row_name(r): r["supervised"] for r in rows}
    head = f"{'method':<16}{'labels':>7}" + "".join(f"{b:>15}" for b in bits)
    lines = [title, head, "-" * len(head)]
    for name in names:
        cells = []
        for b in bits:
            vals = [float(r["map"]) for r in rows if row_name(r) == name and int(r["hash_len"]) == b]
            if not vals:
                cells.append(f"{'-':>15}")
            elif len(vals) == 1:
                cells.append(f"{vals[0]:>15.4f}")
            else:
                cells.append(f"{np.mean(vals):>8.4f}\u00b1{np.std(vals):.4f}")
        lines.append(f"{name:<16}{'yes' if supervised[name] in (True, 'True') else 'no':>7}" + "".join(cells))
    return "\n".join(lines)


def row_name(row: dict) -> str:
    return f"hagcn-{row['task']}" if row["method"] == "hagcn" else row["method"]


# ----------------------------------------------------------------------------- main

def run_grid(args) -> list[dict]:
    data = load_dataset(args.dataset, args.root_dir, args.subsample, args.seed, features=args.features,
                        labels=args.labels, names=args.names)
    n_classes = len(data.classes)
    if args.num_cls is not None and args.num_cls != n_classes:
        source = args.features or args.root_dir or args.dataset
        raise DataError(f"--num_cls {args.num_cls}: {source} has {n_classes} classes")
    if args.knn is None:
        args.knn = min(n_classes, args.batch_size - 1)
    splits = make_splits(data.y, args.split, args.folds, args.seed, args.query_per_class, args.num_train)
    for split in splits:
        if min(len(split.train), len(split.query), len(split.db)) < 2:
            raise DataError(f"{args.dataset}: {len(data.y)} items are too few for --split {args.split} "
                            f"(train {len(split.train)}, query {len(split.query)}, database {len(split.db)})")
    log_dir = Path(args.log_dir)
    log_dir.mkdir(parents=True, exist_ok=True)  # only now that the data and splits are known to be good
    results_csv = log_dir / "results.csv"
    done = {r["run_id"]: r for r in read_results(results_csv)}
    trained = trained_runs(done, log_dir)
    env = environment()
    write_json(log_dir / "last_args.json", {"args": vars(args), "environment": env})
    topk = args.topk or None
    rows = []
    for fold, split in enumerate(splits):
        X = standardise(data.X, split.train)
        pool = cache(partial(neighbour_pool, X[split.train], args))
        for method in args.method:
            for task in (args.task if method == "hagcn" else ["-"]):
                for bits in args.exp_hash_len:
                    settings = run_settings(args, method, task, bits, fold)
                    run_id = run_id_of(settings)
                    desc = f"{method}{'-' + task if method == 'hagcn' else ''} {bits} bits fold {fold}"
                    if run_id in done and not args.force:
                        print(f"skip {desc}: already in {results_csv} (run {run_id}; --force to redo)", file=sys.stderr)
                        rows.append(done[run_id])
                        continue
                    run_dir = log_dir / "runs" / run_id
                    run_dir.mkdir(parents=True, exist_ok=True)
                    train_id = train_id_of(settings)
                    source = None if args.force else trained.get(train_id)
                    if source is not None:
                        print(f"{desc}: evaluating the codes of run {source.name} (same training settings)",
                              file=sys.stderr)
                        q_bits, db_bits = reuse_trained(source, run_dir)
                        seconds = float(done[source.name]["train_seconds"])
                    else:
                        q_bits, db_bits, seconds = fit_and_encode(method, task, bits, X, data.y, split, n_classes,
                                                                  args, run_dir, desc, pool)
                    metrics = evaluate_codes(q_bits, db_bits, data.y[split.query], data.y[split.db], topk,
                                             relevance=args.metric)
                    save_codes(run_dir / "codes.npz", data, split, q_bits, db_bits)
                    row = {"dataset": data.name, "method": method, "task": task, "k": args.k, "knn": args.knn,
                           "tau": args.tau, "hash_len": bits, "topk": args.topk, "map": f"{metrics['map']:.6f}",
                           "precision_at_k": f"{metrics['precision_at_k']:.6f}",
                           "recall_at_k": f"{metrics['recall_at_k']:.6f}",
                           "precision_r2": f"{metrics['precision_r2']:.6f}", "train_seconds": f"{seconds:.2f}",
                           "seed": args.seed, "fold": fold, "split": args.split, "num_epochs": args.num_epochs,
                           "batch_size": args.batch_size, "batch_group": args.batch_group, "lr": args.lr,
                           "hash_head": args.hash_head,
                           "loss_form": args.loss_form, "sim_target": args.sim_target, "lambda_": args.lambda_,
                           "supervised": method in baselines.SUPERVISED, "metric": args.metric, "run_id": run_id,
                           "finished": time.strftime("%Y-%m-%dT%H:%M:%S")}
                    write_json(run_dir / "run.json", {"settings": settings, "args": vars(args), "environment": env,
                                                      "trained_in": (source or run_dir).name,
                                                      "metrics": {k: v.tolist() if isinstance(v, np.ndarray) else v
                                                                  for k, v in metrics.items()}})
                    append_result(results_csv, row)
                    done[run_id] = row
                    trained.setdefault(train_id, run_dir)
                    rows.append(row)
                    print(f"{desc}: mAP@{args.topk or 'all'} {metrics['map']:.4f} ({seconds:.1f} s)", file=sys.stderr)
    return rows


def main(argv: list[str] | None = None) -> int:
    try:
        args = parse_args(argv)
        rows = run_grid(args)
    except (ArgError, DataError, CheckpointError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except TrainingDiverged as e:
        print(f"error: {e}; no result row was written", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted: finished runs are in results.csv; add --resume to continue from the last checkpoint",
              file=sys.stderr)
        return 130
    folds = f", {args.folds} folds" if args.folds > 1 else ""
    title = (f"mAP@{args.topk or 'all'} on {args.dataset} (split {args.split}{folds}, "
             f"{args.num_epochs} epochs, seed {args.seed})")
    print(format_table(rows, args.exp_hash_len, title))
    return 0


if __name__ == "__main__":
    sys.exit(main())
