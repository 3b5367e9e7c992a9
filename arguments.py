"""Command-line flags and their defaults (edit them here), optional YAML config, and input checks.

Precedence: built-in defaults < --config FILE.yaml < flags on the command line.
"""
from __future__ import annotations

import argparse
import importlib.util
import math
import os
import sys
import tempfile
from pathlib import Path

import torch
import yaml

import distributed
from results import is_writer

FILTER_NAMES = ["gcn", "fourier", "spline", "cheby", "lanczos", "identity"]
METHOD_NAMES = ["hagcn", "lsh", "pcah", "itq", "sh", "agh", "bihalf", "dsh", "hashnet", "shc"]
MAX_BITS = 4096
# The training budget, chosen on validation curves (docs/convergence.md): under the cosine schedule from a peak rate
# of 1e-3, Fashion-MNIST's curves are flat by 20 epochs (430 steps each); digits, at 9-11 steps an epoch, needs 100 for
# every method's curve (HAGCN's is flat from 60).
EPOCHS = 20
DIGITS_EPOCHS = 100


class ArgError(ValueError):
    """A bad flag or config: main.py prints it as one line on stderr and exits with status 2."""


class Parser(argparse.ArgumentParser):
    """argparse whose errors are one line (no usage block) raised as ArgError."""

    def error(self, message: str):
        raise ArgError(message)


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """--help names every default: argparse's '(default: X)', except where the default is derived from other flags
    (None) or already explained in the flag's own help."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.default is None or "default" in (action.help or ""):
            return action.help
        return super()._get_help_string(action)


def build_parser() -> Parser:
    p = Parser(description="HAGCN deep hashing: train, evaluate and tabulate mAP.", formatter_class=HelpFormatter)
    a = p.add_argument
    a("--config", type=str, default=None, help="YAML file of flag values; command-line flags override it")
    # data
    a("--dataset", choices=["digits", "fashion_mnist", "fashion_mnist_pairs", "folder", "matrix"], default=None,
      help="built-in data, 'folder' for --root_dir, 'matrix' for --features/--labels (default: matrix if --features "
           "is given, folder if --root_dir is, else digits)")
    a("--root_dir", type=str, default=None, help="ROOT/<class>/<item>.npy embeddings (or the Fashion-MNIST IDX folder)")
    a("--features", type=str, default=None, help="X.npy: one (n, d) float16/float32 feature matrix (memory-mapped)")
    a("--labels", type=str, default=None,
      help="Y.npy for --features: integer labels (n,) or a 0/1 multi-hot matrix (n, C) (multi-label)")
    a("--names", type=str, default=None, help="optional names.txt for --features: one item name per line")
    a("--num_cls", type=int, default=None, help="expected number of classes, checked against the data")
    a("--subsample", type=int, default=None, help="use a class-stratified random subset of this many items")
    a("--split", choices=["ref", "standard"], default="ref", help="ref: paper repo's 80/10/10; standard: q per class")
    a("--folds", type=int, default=1, help="number of folds (ref: K-fold; standard: independent query draws)")
    a("--query_per_class", type=int, default=100, help="--split standard: queries per class")
    a("--num_train", type=int, default=10000, help="--split standard: training items sampled from the database")
    a("--val_queries", type=int, default=1000,
      help="validation queries held out of each fold's training rows (at most a tenth of them; 0: no validation)")
    a("--val_db", type=int, default=5000, help="validation database: a sample of this many of the training rows")
    # methods
    a("--method", nargs="+", default=["hagcn", "itq", "lsh"],
      help=f"any of {' '.join(METHOD_NAMES)}, or all (default: HAGCN with ITQ and LSH for context)")
    a("--task", nargs="+", default=["gcn"],
      help=f"HAGCN spectral filters, any of {' '.join(FILTER_NAMES)}")
    a("--exp_hash_len", nargs="+", type=int, default=[16, 32, 64], help="code lengths in bits")
    a("--k", type=int, default=4, help="filter order K (Chebyshev order, eigenvectors, Lanczos steps)")
    a("--knn", type=int, default=None, help="neighbours per node of the batch graph (default: number of classes)")
    a("--hidden", type=int, default=768, help="encoder width")
    a("--batch_group", type=int, default=8,
      help="neighbourhood batches: batch_size // G training items, each with G - 1 of its nearest training items "
           "(1: shuffled batches)")
    a("--neighbour_pool", type=int, default=50, help="--batch_group draws each item's mates from its this many neighbours")
    a("--graph_edges", choices=["diffusion", "global", "batch"], default="diffusion",
      help="batch graph: k-NN among the batch's items in their diffusion coordinates in the global k-NN graph of the "
           "training split, the global k-NN graph restricted to the batch, or k-NN among the batch's own inputs (paper)")
    a("--diffusion_dims", type=int, default=64, help="diffusion coordinates: this many lowest graph frequencies")
    a("--diffusion_t", type=float, default=8.0, help="diffusion coordinates: eigenvalue^t scaling (diffusion time)")
    a("--hash_head", choices=["linear", "mlp"], default="mlp",
      help="linear: H = X W2 (paper); mlp: H = MLP(Z1) on the encoder output")
    a("--graph_source", choices=["input", "encoder"], default="input", help="features the batch graph is built on")
    a("--alpha", type=float, default=1.0, help="initial sigmoid slope alpha of P = sigmoid(alpha H)")
    a("--alpha_max", type=float, default=10.0, help="final alpha (geometric growth over the epochs)")
    a("--tau", type=float, default=0.5, help="bit threshold: b = sign(P - tau)")
    a("--loss_form", choices=["ours", "paper_repo"], default="ours", help="similarity term of the HAGCN loss")
    a("--sim_target", choices=["diffusion", "knn", "cosine"], default="diffusion",
      help="similarity target S of the 'ours' loss: cosine of the diffusion coordinates, the batch graph's edges, or "
           "cosine of the inputs")
    a("--lambda_", type=float, default=1.0, help="weight of the similarity term (paper repo: 1e-4)")
    a("--recon_weight", type=float, default=1.0,
      help="weight of HAGCN's reconstruction term; 0 skips the filter and the decoder (no reconstruction)")
    # optimisation
    a("--num_epochs", type=int, default=None,
      help=f"training epochs (default: {EPOCHS}; {DIGITS_EPOCHS} on digits, whose epochs are a few steps each)")
    a("--batch_size", type=int, default=128, help="mini-batch size (rows per step; under torchrun, all processes')")
    a("--lr", type=float, default=1e-3, help="Adam's learning rate (the peak of --lr_schedule cosine; paper: 1e-4)")
    a("--lr_schedule", choices=["constant", "cosine"], default="cosine",
      help="constant, or linear warm-up over --warmup_epochs then cosine decay to 0 at the last epoch")
    a("--warmup_epochs", type=float, default=1.0, help="--lr_schedule cosine: epochs of linear warm-up")
    a("--seed", type=int, default=0, help="seed of the splits, the initial weights, the batches and the baselines")
    a("--precision", choices=["fp32", "bf16"], default="fp32",
      help="bf16: forward and loss under bfloat16 autocast (faster on CPUs with AVX512-BF16/AMX; fp32 weights)")
    a("--device", type=str, default=None, help="cuda or cpu (default: cuda when available)")
    # evaluation and outputs
    a("--val_every", type=int, default=None,
      help="score the validation split every this many epochs and after the last (default: as often as keeps it under "
           "5%% of the training time, main.validation_every: every epoch on Fashion-MNIST, every 8th on digits)")
    a("--select_epoch", choices=["last", "best_val"], default="last",
      help="codes of the last epoch, or of the epoch with the best validation mAP")
    a("--early_stop", type=int, default=0,
      help="stop after this many validations without a better validation mAP (0: never)")
    a("--topk", type=int, default=200, help="mAP@topk (0 = whole database)")
    a("--ties", choices=["expected", "index"], default="expected",
      help="mAP of the table: expected over the orders of equally distant items (tie-aware, He et al. CVPR 2018) "
           "or the stable order (ties by database index); results.csv records both")
    a("--metric", choices=["label", "paper_repo"], default="label",
      help="relevance: shared label; paper_repo reproduces the paper repo's defective np.dot(qL, dbL) > 0")
    a("--log_dir", type=str, default="logs", help="results.csv, run folders (checkpoints, codes, JSON)")
    a("--resume", action="store_true", help="continue interrupted runs from their checkpoints")
    a("--force", action="store_true", help="redo runs already recorded in results.csv")
    a("--tensorboard", action="store_true",
      help="also log each epoch's losses to TensorBoard (run folder/tensorboard; needs `pip install tensorboard`)")
    return p


def default_text(action: argparse.Action) -> str:
    """A flag's default as --help and docs/flags.md show it."""
    if action.default is None or action.default is argparse.SUPPRESS:
        return "-"
    if isinstance(action.default, list):
        return " ".join(map(str, action.default))
    return str(action.default)


def flags_markdown(parser: argparse.ArgumentParser | None = None) -> str:
    """docs/flags.md: one table row per flag of main.py (`python arguments.py > docs/flags.md`), so the page is the
    parser and cannot drift from it; a test compares the two."""
    parser = parser or build_parser()
    lines = ["# main.py flags", "",
             "Generated from `arguments.py` by `python arguments.py > docs/flags.md`; edit the defaults there. "
             "Precedence: built-in defaults < `--config FILE.yaml` < the command line. A default shown as - is "
             "derived from other flags, as the description says.", "",
             "| flag | default | what it sets |", "|---|---|---|"]
    for action in parser._actions:
        if not action.option_strings or action.dest == "help":
            continue
        choices = f" (choices: {', '.join(map(str, action.choices))})" if action.choices else ""
        text = (action.help or "").replace("|", "\\|") + choices
        lines.append(f"| `{' '.join(action.option_strings)}` | `{default_text(action)}` | {text} |")
    return "\n".join(lines) + "\n"


def load_config(path: str, parser: Parser) -> dict:
    """YAML mapping of flag names (without --) to values, checked against the known flags."""
    try:
        with open(path) as f:
            cfg = yaml.safe_load(f) or {}
    except OSError as e:
        raise ArgError(f"--config {path}: cannot read ({e.strerror})")
    except yaml.YAMLError as e:
        raise ArgError(f"--config {path}: not valid YAML ({str(e).splitlines()[0]})")
    if not isinstance(cfg, dict):
        raise ArgError(f"--config {path}: expected a mapping of flag: value, got {type(cfg).__name__}")
    known = {act.dest: act for act in parser._actions}
    for key, value in cfg.items():
        if key not in known or key in ("help", "config"):
            raise ArgError(f"--config {path}: unknown key '{key}'")
        cfg[key] = config_value(path, key, value, known[key])
    return cfg


def config_value(path: str, key: str, value, action: argparse.Action):
    """A YAML value checked and converted as the command line would be (type, choices, one value or a list)."""
    def bad(why: str) -> ArgError:
        return ArgError(f"--config {path}: {key}: {why}")

    if action.nargs == 0:  # store_true flags
        if not isinstance(value, bool):
            raise bad(f"expected true or false, got {value!r}")
        return value
    if value is None:
        if action.default is not None:
            raise bad("a value is required")
        return None
    values = value if isinstance(value, list) else [value]
    if action.nargs != "+" and isinstance(value, (list, dict)):
        raise bad(f"expected one value, got {value!r}")
    out = []
    convert = action.type or str
    for v in values:
        if isinstance(v, (bool, list, dict)):
            raise bad(f"invalid value {v!r}")
        try:
            v = convert(str(v))  # as if typed on the command line: int("3.5") fails, float("1e-4") works
        except ValueError:
            raise bad(f"invalid {convert.__name__} value {v!r}")
        if action.choices is not None and v not in action.choices:
            raise bad(f"invalid choice {v!r} (choose from {', '.join(map(str, action.choices))})")
        out.append(v)
    return out if action.nargs == "+" else out[0]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Defaults < YAML config < command line; then fill derived defaults and check every value."""
    parser = build_parser()
    config_path = find_config_flag(sys.argv[1:] if argv is None else argv)
    if config_path:
        parser.set_defaults(**load_config(config_path, parser))
    args = parser.parse_args(argv)
    if args.dataset is None:
        args.dataset = "matrix" if args.features else "folder" if args.root_dir else "digits"
    if args.num_epochs is None:
        args.num_epochs = DIGITS_EPOCHS if args.dataset == "digits" else EPOCHS
    if args.device is None:
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    if "all" in args.method:
        args.method = list(METHOD_NAMES)
    check_args(args)
    return args


def find_config_flag(argv: list[str]) -> str | None:
    for i, tok in enumerate(argv):
        if tok == "--config" and i + 1 < len(argv):
            return argv[i + 1]
        if tok.startswith("--config="):
            return tok.split("=", 1)[1]
    return None


def check_args(args: argparse.Namespace) -> None:
    """Reject values that would crash or silently mislead later, naming the flag."""
    def need(ok: bool, msg: str) -> None:
        if not ok:
            raise ArgError(msg)

    unknown = [m for m in args.method if m not in METHOD_NAMES]
    need(not unknown, f"--method {' '.join(unknown)}: unknown (choose from {' '.join(METHOD_NAMES)} or all)")
    unknown = [t for t in args.task if t not in FILTER_NAMES]
    need(not unknown, f"--task {' '.join(unknown)}: unknown (choose from {' '.join(FILTER_NAMES)})")
    for bits in args.exp_hash_len:
        need(1 <= bits <= MAX_BITS, f"--exp_hash_len {bits}: must be between 1 and {MAX_BITS}")
    need(args.batch_size >= 2, f"--batch_size {args.batch_size}: must be at least 2 (the batch graph needs neighbours)")
    need(args.batch_group >= 1, f"--batch_group {args.batch_group}: must be at least 1")
    need(args.neighbour_pool >= 1, f"--neighbour_pool {args.neighbour_pool}: must be at least 1")
    need(args.k >= 1, f"--k {args.k}: the filter order must be at least 1")
    need(args.diffusion_dims >= 1, f"--diffusion_dims {args.diffusion_dims}: must be at least 1")
    need(args.diffusion_t >= 0, f"--diffusion_t {args.diffusion_t}: must be non-negative")
    if args.knn is not None:
        need(1 <= args.knn < args.batch_size,
             f"--knn {args.knn}: must be at least 1 and below --batch_size {args.batch_size}")
    need(args.num_epochs >= 1, f"--num_epochs {args.num_epochs}: must be at least 1")
    need(args.lr > 0, f"--lr {args.lr}: must be positive")
    need(args.hidden >= 1, f"--hidden {args.hidden}: must be at least 1")
    need(0 < args.tau < 1, f"--tau {args.tau}: must be strictly between 0 and 1")
    need(args.alpha > 0 and args.alpha_max > 0, "--alpha/--alpha_max: must be positive")
    need(args.lambda_ >= 0, f"--lambda_ {args.lambda_}: must be non-negative")
    need(args.folds >= 1, f"--folds {args.folds}: must be at least 1")
    need(args.topk >= 0, f"--topk {args.topk}: must be 0 (whole database) or positive")
    need(args.num_cls is None or args.num_cls >= 2, f"--num_cls {args.num_cls}: must be at least 2")
    need(args.subsample is None or args.subsample >= 10, f"--subsample {args.subsample}: must be at least 10")
    need(args.query_per_class >= 1 and args.num_train >= 1, "--query_per_class/--num_train: must be positive")
    need(args.val_queries >= 0, f"--val_queries {args.val_queries}: must be 0 (no validation) or positive")
    need(args.val_db >= 1, f"--val_db {args.val_db}: must be positive")
    need(args.val_every is None or args.val_every >= 1, f"--val_every {args.val_every}: must be at least 1")
    need(args.early_stop >= 0, f"--early_stop {args.early_stop}: must be 0 (never) or positive")
    for flag, used in (("--select_epoch best_val", args.select_epoch == "best_val"),
                       (f"--early_stop {args.early_stop}", args.early_stop > 0)):
        need(not used or args.val_queries > 0, f"{flag}: needs a validation split (--val_queries is 0)")
    need(args.warmup_epochs >= 0, f"--warmup_epochs {args.warmup_epochs}: must be non-negative")
    need(args.recon_weight >= 0, f"--recon_weight {args.recon_weight}: must be non-negative")
    need(args.dataset != "folder" or bool(args.root_dir), "--dataset folder: needs --root_dir PATH")
    check_matrix_args(args)
    check_batch_shares(args)
    if args.device.startswith("cuda"):
        need(torch.cuda.is_available(), f"--device {args.device}: CUDA is not available on this machine (use --device cpu)")
    else:
        need(args.device == "cpu", f"--device {args.device}: unknown (use cpu or cuda)")
    need(not args.tensorboard or importlib.util.find_spec("tensorboard") is not None,
         "--tensorboard: the tensorboard package is not installed (pip install tensorboard)")
    if is_writer():  # one probe: the ranks of a torchrun launch would remove each other's new folders
        check_log_dir(Path(args.log_dir))


def check_batch_shares(args: argparse.Namespace) -> None:
    """Under torchrun --batch_size is the global batch: it must split into the same number of whole --batch_group
    groups per process, at least two rows each (the batch graph needs neighbours)."""
    world = distributed.world_size()
    group = min(args.batch_group, args.batch_size)
    groups = args.batch_size // group
    if world > 1 and (groups % world or groups // world * group < 2):
        raise ArgError(f"--batch_size {args.batch_size}: a global batch of {groups} group(s) of --batch_group "
                       f"{group} cannot be shared by {world} processes in equal whole groups of at least 2 rows; "
                       f"use a multiple of {group * world}, at least {math.ceil(2 / group) * group * world}")


def check_matrix_args(args: argparse.Namespace) -> None:
    """--features/--labels/--names go together and with --dataset matrix only."""
    if args.features and not args.labels:
        raise ArgError("--features: needs --labels Y.npy (integer labels (n,) or 0/1 multi-hot (n, C))")
    if args.labels and not args.features:
        raise ArgError("--labels: needs --features X.npy")
    matrix = args.dataset == "matrix"
    if matrix and not args.features:
        raise ArgError("--dataset matrix: needs --features X.npy and --labels Y.npy")
    for flag in ("features", "labels", "names"):
        if getattr(args, flag) and not matrix:
            raise ArgError(f"--{flag}: only with a feature matrix (--dataset matrix), not --dataset {args.dataset}")
    if matrix and args.root_dir:
        raise ArgError("--root_dir: not with --features (give one data source)")


def check_log_dir(log_dir: Path) -> None:
    """The log folder must be creatable and writable before hours of training, not after. Permission bits do not
    tell (root passes os.access even under /proc), so the folder is created and a probe file written, then both
    removed again: a run rejected later (bad data) leaves nothing behind."""
    existing = log_dir.absolute()
    while not existing.exists() and not existing.is_symlink():
        existing = existing.parent
    if not existing.is_dir():
        raise ArgError(f"--log_dir {log_dir}: cannot create ({existing} is not a directory)")
    created = log_dir.absolute().relative_to(existing).parts
    try:
        log_dir.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(dir=log_dir, prefix=".probe")
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        where = f"{e.filename}: " if e.filename and str(e.filename) != str(log_dir) else ""
        raise ArgError(f"--log_dir {log_dir}: cannot create or write ({where}{e.strerror})")
    finally:
        remove_empty_dirs(existing, created)


def remove_empty_dirs(base: Path, parts: tuple[str, ...]) -> None:
    """Remove base/parts[0]/.../parts[-1] bottom-up while each is empty (the folders a probe created)."""
    for depth in range(len(parts), 0, -1):
        try:
            (base / Path(*parts[:depth])).rmdir()
        except OSError:
            return


if __name__ == "__main__":
    sys.stdout.write(flags_markdown())
