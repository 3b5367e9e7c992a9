"""results.csv: reading it, appending a row, finding finished runs (the grid skip), and the mAP tables.

One row per run (method x filter x code length x fold x settings). A run's id is a hash of its settings, so a grid
run again skips the runs already in results.csv and reuses the codes of a run that differs only in evaluation
settings. `is_writer` is the one place that decides whether this process writes outputs.
"""
from __future__ import annotations

import csv
import hashlib
import json
import os
from pathlib import Path
from typing import Callable

import numpy as np

import distributed

CSV_COLUMNS = ["dataset", "method", "task", "k", "knn", "tau", "hash_len", "topk", "ties", "map", "map_index",
               "map_expected", "precision_at_k", "recall_at_k", "precision_r2", "train_seconds", "val_map",
               "epochs_trained", "kept_epoch", "seed", "fold", "split", "num_epochs", "select_epoch", "early_stop",
               "batch_size", "batch_group", "graph_edges", "lr", "lr_schedule", "warmup_epochs", "precision",
               "hash_head", "loss_form", "sim_target", "lambda_", "recon_weight", "supervised", "metric", "run_id",
               "finished"]
EVAL_KEYS = {"topk", "metric", "ties"}  # change only the evaluation: a run differing in these reuses the trained codes


class OutputError(RuntimeError):
    """An output could not be written (disk full, quota, read-only file system...): main.py prints this one line and
    exits with status 1; the temporary file is gone and the previous version of the output is untouched."""


def atomic_write(path: Path, write: Callable[[Path], None]) -> None:
    """write(tmp) into a temporary name beside `path` (same suffix, so np.savez and savefig keep it), then rename it
    to `path`: a crash or a full disk never leaves half a file, and the temporary file is removed on any failure.
    An OSError becomes an OutputError naming the path and the cause."""
    tmp = path.with_name(f".{path.stem}.tmp{os.getpid()}{path.suffix}")
    try:
        write(tmp)
        os.replace(tmp, path)
    except OSError as e:
        raise OutputError(f"{path}: cannot write ({e.strerror or e})") from e
    finally:
        tmp.unlink(missing_ok=True)


def is_writer() -> bool:
    """Whether this process writes the log folder (results.csv, run folders, checkpoints, epochs.csv). A single
    process always does; a multi-process launch (torchrun) answers True on rank 0 only, here and nowhere else."""
    return distributed.rank() == 0


# ----------------------------------------------------------------------------- run identity

def run_id_of(settings: dict) -> str:
    return hashlib.sha1(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()[:12]


def train_id_of(settings: dict) -> str:
    """Hash of the settings that determine the codes (everything but the evaluation's)."""
    return run_id_of({k: v for k, v in settings.items() if k not in EVAL_KEYS})


# ----------------------------------------------------------------------------- results.csv

def read_results(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def append_result(path: Path, row: dict) -> None:
    """Rewrite results.csv with the new row through a temporary file: never half a row, old columns kept."""
    rows = read_results(path) + [row]
    write_csv(path, rows, list(dict.fromkeys(CSV_COLUMNS + [c for r in rows for c in r])))


def write_csv(path: Path, rows: list[dict], columns: list[str]) -> None:
    """The rows under a header of `columns`, written atomically (atomic_write)."""
    def write(tmp: Path) -> None:
        with open(tmp, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=columns)
            writer.writeheader()
            writer.writerows(rows)
    atomic_write(path, write)


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


def write_json(path: Path, obj: dict) -> None:
    atomic_write(path, lambda tmp: tmp.write_text(json.dumps(obj, indent=2, default=str)))


class ResultsLog:
    """The finished runs of one log folder: which to skip, whose codes to reuse, and recording new ones
    (last_args.json, each run's run.json and codes, its results.csv row: the records a rank-0 check guards)."""

    def __init__(self, log_dir: Path, last_args: dict):
        self.dir = log_dir
        self.csv = log_dir / "results.csv"
        self.done = {r["run_id"]: r for r in read_results(self.csv)}
        self.trained = trained_runs(self.done, log_dir)
        if is_writer():
            write_json(log_dir / "last_args.json", last_args)

    def finished(self, run_id: str, force: bool) -> dict | None:
        """The row of an already finished run (to skip it), None to run it (or --force)."""
        return None if force else self.done.get(run_id)

    def trained_in(self, train_id: str, force: bool) -> Path | None:
        """The folder of a finished run with the same training settings, whose codes can be re-evaluated."""
        return None if force else self.trained.get(train_id)

    def add(self, row: dict, train_id: str, run_dir: Path, record: dict, save_codes: Callable[[], None]) -> None:
        """Record a finished run: its codes (save_codes()), run.json (`record`), then its results.csv row."""
        if is_writer():
            save_codes()
            write_json(run_dir / "run.json", record)
            append_result(self.csv, row)
        self.done[row["run_id"]] = row
        self.trained.setdefault(train_id, run_dir)


# ----------------------------------------------------------------------------- tables

def row_name(row: dict) -> str:
    return f"hagcn-{row['task']}" if row["method"] == "hagcn" else row["method"]


def is_supervised(row: dict) -> bool:
    return row["supervised"] in (True, "True")


def map_stats(rows: list[dict], bits: list[int]) -> dict[str, dict[int, list[float]]]:
    """{row name: {code length: [mAP of each fold/seed]}} in first-seen order of the names."""
    stats: dict[str, dict[int, list[float]]] = {}
    for r in rows:
        stats.setdefault(row_name(r), {b: [] for b in bits})
        if int(r["hash_len"]) in stats[row_name(r)]:
            stats[row_name(r)][int(r["hash_len"])].append(float(r["map"]))
    return stats


def format_table(rows: list[dict], bits: list[int], title: str) -> str:
    """Rows = method (HAGCN: one per filter), columns = code lengths; mean +- std over folds."""
    supervised = {row_name(r): is_supervised(r) for r in rows}
    head = f"{'method':<16}{'labels':>7}" + "".join(f"{b:>15}" for b in bits)
    lines = [title, head, "-" * len(head)]
    for name, per_bits in map_stats(rows, bits).items():
        cells = []
        for vals in per_bits.values():
            if not vals:
                cells.append(f"{'-':>15}")
            elif len(vals) == 1:
                cells.append(f"{vals[0]:>15.4f}")
            else:
                cells.append(f"{np.mean(vals):>8.4f}\u00b1{np.std(vals):.4f}")
        lines.append(f"{name:<16}{'yes' if supervised[name] else 'no':>7}" + "".join(cells))
    return "\n".join(lines)


def best_and_ties(cells: dict[str, list[float]]) -> tuple[set[str], set[str]]:
    """(rows with the best mean, rows tied with one of them): a row ties when its mean is below the best mean by
    less than the spread, the larger of the two rows' standard deviations over folds (0 with one fold)."""
    means = {name: float(np.mean(v)) for name, v in cells.items() if v}
    if not means:
        return set(), set()
    top = max(means.values())
    best = {name for name, m in means.items() if m == top}
    ties = {name for name, m in means.items() if name not in best
            and any(top - m < max(np.std(cells[b]), np.std(cells[name])) for b in best)}
    return best, ties


def markdown_table(rows: list[dict], bits: list[int], title: str | None = None, commit: str | None = None,
                   folds: int | None = None) -> str:
    """A Markdown table of mAP, rows = methods (HAGCN: one per filter), columns = code lengths, cells mean ± std
    over folds (n folds in the header). Per column the best mean is bold and rows tied with it (difference smaller
    than the spread, see best_and_ties) are marked with a dagger; `commit` names the code the rows came from. With
    `folds`, a cell of a partial grid that holds fewer folds says how many ('(1 of 3 folds)')."""
    stats = map_stats(rows, bits)
    supervised = {row_name(r): is_supervised(r) for r in rows}
    n_runs = sorted({len(v) for per in stats.values() for v in per.values() if v})
    marks = {b: best_and_ties({name: per[b] for name, per in stats.items()}) for b in bits}
    lines = [f"**{title}**", ""] if title else []
    runs = "/".join(map(str, n_runs)) or "0"
    lines += ["| method | labels | " + " | ".join(f"{b} bits" for b in bits) + " |",
              "|---|---|" + "---:|" * len(bits)]
    for name, per in stats.items():
        cells = []
        for b in bits:
            vals = per[b]
            if not vals:
                cells.append("-")
                continue
            text = f"{np.mean(vals):.4f} ± {np.std(vals):.4f}" if len(vals) > 1 else f"{vals[0]:.4f}"
            best, ties = marks[b]
            text = f"**{text}**" if name in best else f"{text} †" if name in ties else text
            cells.append(f"{text} ({len(vals)} of {folds} folds)" if folds and len(vals) < folds else text)
        lines.append(f"| {name} | {'yes' if supervised[name] else 'no'} | " + " | ".join(cells) + " |")
    lines += ["", f"mAP, mean ± std over {runs} fold(s) per cell; **bold**: best in its column; †: tied with the "
              "best (its mean is lower by less than the larger standard deviation of the two)."
              + (f" Rows from commit `{commit}`." if commit else "")]
    return "\n".join(lines)
