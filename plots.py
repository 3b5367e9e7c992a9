"""Figures from the runs main.py logged: mAP against code length, filter order K, top-k and tau, precision-recall
curves, a t-SNE of database codes, and the training loss curves.

    python plots.py                                   # every dataset in logs/results.csv -> images/
    python plots.py --log_dir logs --out images --dataset fashion_mnist --bits 32

Reads `<log_dir>/results.csv` (one row per run), each run's `runs/<run_id>/run.json` (settings, the
precision-recall curve), `codes.npz` (database codes, for the t-SNE) and `epochs.csv` (the loss curves). A figure varies one setting; every other
setting is held fixed at the combination that gives that figure the most points (so an ablation of K at 32 bits
is drawn at 32 bits even when the main grid has more rows), and rows that differ only in seed or fold are
averaged (the shaded band is +- one standard deviation). Settings a method does not use (K for ITQ, epochs for
LSH) are ignored for it. A figure whose setting has a single value in results.csv is skipped with a note.
Every plot function returns its matplotlib Figure (or raises Skip) so tests can read the lines back.
"""
from __future__ import annotations

import argparse
import csv
import json
import math
import sys
from collections import defaultdict
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from results import OutputError, atomic_write  # noqa: E402

FIGSIZE = (6.0, 4.0)
DPI = 120
FILTER_NAMES = ["gcn", "fourier", "spline", "cheby", "lanczos", "identity"]  # as arguments.FILTER_NAMES (no torch)
CLOSED_FORM = {"lsh", "pcah", "itq", "sh", "agh"}                # as baselines.CLOSED_FORM
SUPERVISED = {"dsh", "hashnet", "shc"}                           # as baselines.SUPERVISED
BASELINES = ["lsh", "pcah", "itq", "sh", "agh", "bihalf", "dsh", "hashnet", "shc"]
DISPLAY = {"lsh": "LSH", "pcah": "PCAH", "itq": "ITQ", "sh": "SH", "agh": "AGH", "bihalf": "Bi-half", "dsh": "DSH",
           "hashnet": "HashNet", "shc": "SHC"}
COLORS = {"hagcn-gcn": "tab:blue", "hagcn-fourier": "tab:orange", "hagcn-spline": "tab:green",
          "hagcn-cheby": "tab:red", "hagcn-lanczos": "tab:purple", "hagcn-identity": "silver", "lsh": "tab:gray",
          "pcah": "tab:olive", "itq": "tab:cyan", "sh": "tab:pink", "agh": "darkgreen", "bihalf": "tab:brown",
          "dsh": "black", "hashnet": "goldenrod", "shc": "darkslateblue"}
MARKERS = {"lsh": "v", "pcah": "^", "itq": "s", "sh": "D", "agh": "d", "bihalf": "P", "dsh": "X", "hashnet": "*",
           "shc": "h"}

# Settings that define what a result means. COMMON apply to every method (the data, protocol and metric);
# the others only to the methods that use them: a closed-form baseline ignores the training settings.
COMMON = ["dataset", "root_dir", "subsample", "split", "folds", "query_per_class", "num_train", "metric", "ties",
          "topk", "hash_len"]
TRAINING = ["num_epochs", "batch_size", "lr", "hidden", "precision"]
HAGCN_ONLY = ["k", "knn", "tau", "hash_head", "graph_source", "alpha", "alpha_max", "loss_form", "sim_target",
              "lambda_", "graph_edges", "diffusion_dims", "diffusion_t"]
AVERAGED = ["seed", "fold"]


class Skip(Exception):
    """results.csv lacks what a figure needs (e.g. a single value of K); the message says what."""


# ----------------------------------------------------------------------------- reading the runs

TEXT = {"run_id", "finished", "dataset", "method", "task", "root_dir", "split", "metric", "ties", "hash_head",
        "loss_form", "sim_target", "graph_source", "graph_edges", "supervised"}  # never read as numbers (a run id like 8869903e1830 is text)


def canon(value, key: str = ""):
    """One comparable value per setting, whether it came from the CSV (text) or run.json (typed)."""
    if value is None or value == "":
        return None
    if isinstance(value, bool) or key in TEXT:
        return str(value)
    if isinstance(value, (int, float)):
        f = float(value)
    else:
        try:
            f = float(value)
        except ValueError:
            return str(value)
    return int(f) if f.is_integer() else f


def load_rows(log_dir: str | Path) -> list[dict]:
    """results.csv rows with typed values, completed from each run's run.json (settings the CSV lacks, e.g.
    tau and hidden in older logs). Raises FileNotFoundError when there is no results.csv."""
    log_dir = Path(log_dir)
    path = log_dir / "results.csv"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file (run main.py with --log_dir {log_dir} first)")
    with open(path, newline="") as f:
        raw = list(csv.DictReader(f))
    rows = []
    for r in raw:
        row = {key: canon(v, key) for key, v in r.items() if key is not None}
        settings = read_run_json(log_dir, row.get("run_id")).get("settings", {})
        for key, v in settings.items():
            if row.get(key) is None:
                row[key] = canon(v, key)
        if row.get("map") is None or row.get("method") is None:
            continue
        row["line"] = line_name(row)
        rows.append(row)
    return rows


def read_run_json(log_dir: Path, run_id) -> dict:
    path = Path(log_dir) / "runs" / str(run_id) / "run.json"
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def line_name(row: dict) -> str:
    return f"hagcn-{row.get('task')}" if row["method"] == "hagcn" else str(row["method"])


def label_of(line: str) -> str:
    if line.startswith("hagcn-"):
        return f"HAGCN {line[6:]}"
    return DISPLAY.get(line, line) + (" (sup.)" if line in SUPERVISED else "")


def line_order(line: str) -> tuple:
    if line.startswith("hagcn-"):
        task = line[6:]
        return (0, FILTER_NAMES.index(task) if task in FILTER_NAMES else 99, task)
    return (1, BASELINES.index(line) if line in BASELINES else 99, line)


def own_keys(method: str) -> list[str]:
    """The method-specific settings that change its result."""
    if method == "hagcn":
        return TRAINING + HAGCN_ONLY
    if method in CLOSED_FORM:
        return []
    return TRAINING


def select(rows: list[dict], x: str, lines: set[str] | None = None,
           reference: list[dict] | None = None) -> tuple[dict[str, list[dict]], dict]:
    """Rows per line (legend entry) that differ only in `x` (and seed/fold), and the fixed common settings.

    The common settings (data, protocol, metric, and hash_len/topk unless one of them is x) are the
    combination with the most (line, x) points; within it each line keeps its own settings combination with
    the most x values; ties go to the combination of that line with the most runs in `reference` (default:
    rows; the main grid rather than a one-off ablation), then to more rows, then to the most recent run."""
    reference = rows if reference is None else reference
    rows = [r for r in rows if r.get(x) is not None and (lines is None or r["line"] in lines)]
    if not rows:
        return {}, {}
    common = [c for c in COMMON if c != x]
    groups = defaultdict(list)
    for r in rows:
        groups[tuple(r.get(c) for c in common)].append(r)

    def own(r: dict) -> tuple:
        return tuple(r.get(c) for c in own_keys(r["method"]) if c != x)

    popularity = defaultdict(int)
    for r in reference:
        popularity[r["line"], own(r)] += 1

    def per_line(group: list[dict]) -> dict[str, list[dict]]:
        configs = defaultdict(lambda: defaultdict(list))
        for r in group:
            configs[r["line"]][own(r)].append(r)
        return {line: max(cfgs.values(), key=lambda rs: (len({r[x] for r in rs}), popularity[line, own(rs[0])],
                                                         len(rs), max(str(r.get("finished") or "") for r in rs)))
                for line, cfgs in configs.items()}

    def score(chosen: dict[str, list[dict]]) -> tuple:
        return (sum(len({r[x] for r in rs}) for rs in chosen.values()), sum(len(rs) for rs in chosen.values()),
                max(str(r.get("finished") or "") for rs in chosen.values() for r in rs))

    key, chosen = max(((k, per_line(g)) for k, g in groups.items()), key=lambda kc: score(kc[1]))
    return dict(sorted(chosen.items(), key=lambda kv: line_order(kv[0]))), dict(zip(common, key))


def aggregate(rows: list[dict], x: str, y: str = "map") -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(x values ascending, mean of y, std of y) over the rows sharing an x value (seeds, folds)."""
    by_x = defaultdict(list)
    for r in rows:
        by_x[r[x]].append(float(r[y]))
    xs = sorted(by_x)
    return (np.asarray(xs, dtype=float), np.asarray([np.mean(by_x[v]) for v in xs]),
            np.asarray([np.std(by_x[v]) for v in xs]))


def shared(chosen: dict[str, list[dict]], key: str):
    """The value of `key` if every run drawn has the same one, else None."""
    values = {r.get(key) for rs in chosen.values() for r in rs}
    return values.pop() if len(values) == 1 else None


def map_label(topk) -> str:
    return f"mAP@{topk}" if topk else "mAP@all"


def describe(fixed: dict, chosen: dict[str, list[dict]], keys: list[str]) -> str:
    """A short line naming the settings held fixed, for the title."""
    parts = []
    names = {"hash_len": "{} bits", "k": "K={}", "tau": "\u03c4={}", "topk": None}
    for key in keys:
        value = fixed.get(key, shared(chosen, key))
        if value is None or names.get(key, "") is None:
            continue
        parts.append(names.get(key, key + "={}").format(value))
    subsample = fixed.get("subsample", shared(chosen, "subsample"))
    if subsample not in (None, "", "None"):
        parts.append(f"{subsample}-item subsample")
    epochs = shared(chosen, "num_epochs")
    if epochs not in (None, "", "None"):
        parts.append(f"{epochs} epochs")
    runs = max((len({(r.get("seed"), r.get("fold")) for r in rs}) for rs in chosen.values()), default=1)
    if runs > 1:
        parts.append("mean \u00b1 std where several seeds/folds")
    return ", ".join(parts)


# ----------------------------------------------------------------------------- drawing

def new_figure():
    fig, ax = plt.subplots(figsize=FIGSIZE, dpi=DPI, layout="constrained")
    ax.grid(True, alpha=0.3)
    return fig, ax


def style(line: str) -> dict:
    if line.startswith("hagcn-"):
        return dict(color=COLORS.get(line), linestyle="-", marker="o", linewidth=2.0, markersize=5)
    return dict(color=COLORS.get(line), linestyle=":" if line in SUPERVISED else "--",
                marker=MARKERS.get(line, "o"), linewidth=1.4, markersize=5)


def draw_lines(ax, chosen: dict[str, list[dict]], x: str, xmap=None) -> None:
    """One line per legend entry (mean over seeds/folds), with a +-std band where several runs were averaged."""
    for line, rs in chosen.items():
        xs, mean, std = aggregate(rs, x)
        if xmap is not None:
            xs = np.asarray([xmap(v) for v in xs], dtype=float)
            order = np.argsort(xs, kind="stable")
            xs, mean, std = xs[order], mean[order], std[order]
        ax.plot(xs, mean, label=label_of(line), **style(line))
        if np.any(std > 0):  # several seeds/folds at some x
            ax.fill_between(xs, mean - std, mean + std, color=COLORS.get(line), alpha=0.15, linewidth=0)


def legend(ax, n_entries: int) -> None:
    if n_entries > 6:
        ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0, frameon=False)
    else:
        ax.legend(fontsize=8, loc="best", framealpha=0.85)


def need_variation(chosen: dict[str, list[dict]], x: str, what: str, dataset: str) -> None:
    values = {r[x] for rs in chosen.values() for r in rs}
    if not chosen:
        raise Skip(f"{dataset}: no runs in results.csv for this figure")
    if max(len({r[x] for r in rs}) for rs in chosen.values()) < 2:
        raise Skip(f"{dataset}: results.csv has a single {what} ({', '.join(map(str, sorted(values)))}) "
                   f"for the runs it could compare; run main.py with other values to draw it")


def dataset_rows(rows: list[dict], dataset: str | None) -> tuple[list[dict], str]:
    names = list(dict.fromkeys(str(r.get("dataset")) for r in rows))
    if dataset is None:
        if len(names) != 1:
            raise Skip(f"results.csv holds several datasets ({', '.join(names)}): name one")
        dataset = names[0]
    picked = [r for r in rows if str(r.get("dataset")) == dataset]
    if not picked:
        raise Skip(f"no runs of dataset '{dataset}' in results.csv (it has {', '.join(names) or 'none'})")
    return picked, dataset


def fig_map_vs_bits(rows: list[dict], dataset: str | None = None):
    """mAP against code length: one line per method, HAGCN one line per filter."""
    rows, dataset = dataset_rows(rows, dataset)
    chosen, fixed = select(rows, "hash_len")
    need_variation(chosen, "hash_len", "code length", dataset)
    fig, ax = new_figure()
    draw_lines(ax, chosen, "hash_len")
    bits = sorted({r["hash_len"] for rs in chosen.values() for r in rs})
    ax.set_xscale("log", base=2)
    ax.set_xticks(bits, [str(b) for b in bits])
    ax.minorticks_off()
    ax.set_xlabel("code length (bits)")
    ax.set_ylabel(map_label(fixed.get("topk")))
    sub = describe(fixed, chosen, ["k", "tau"])
    ax.set_title(f"{map_label(fixed.get('topk'))} vs code length on {dataset}" + (f"\n{sub}" if sub else ""),
                 fontsize=10)
    legend(ax, len(chosen))
    return fig


def fig_map_vs_k(rows: list[dict], dataset: str | None = None):
    """mAP against the filter order K, one line per HAGCN filter (gcn has no order and is left out)."""
    rows, dataset = dataset_rows(rows, dataset)
    lines = {r["line"] for r in rows if r["method"] == "hagcn" and r.get("task") != "gcn"}
    chosen, fixed = select(rows, "k", lines)
    need_variation(chosen, "k", "filter order K", dataset)
    fig, ax = new_figure()
    draw_lines(ax, chosen, "k")
    ks = sorted({r["k"] for rs in chosen.values() for r in rs})
    ax.set_xticks(ks, [str(k) for k in ks])
    ax.set_xlabel("filter order K (--k)")
    ax.set_ylabel(map_label(fixed.get("topk")))
    sub = describe(fixed, chosen, ["hash_len", "tau"])
    ax.set_title(f"HAGCN {map_label(fixed.get('topk'))} vs filter order K on {dataset}" + (f"\n{sub}" if sub else ""),
                 fontsize=10)
    legend(ax, len(chosen))
    return fig


def fig_map_vs_topk(rows: list[dict], dataset: str | None = None, log_dir: str | Path | None = None):
    """mAP@k against k (the --topk of each run), one line per method; --topk 0 (the whole database) is drawn at
    the database size, read from a run's codes.npz when log_dir is given."""
    rows, dataset = dataset_rows(rows, dataset)
    chosen, fixed = select(rows, "topk")
    need_variation(chosen, "topk", "top-k", dataset)
    values = sorted({r["topk"] for rs in chosen.values() for r in rs})
    positive = [v for v in values if v > 0]
    n_db = database_size(log_dir, chosen) if 0 in values else None
    at_all = n_db or (2 * max(positive) if positive else 1)
    fig, ax = new_figure()
    draw_lines(ax, chosen, "topk", xmap=lambda v: at_all if v == 0 else v)
    ticks = sorted(set(positive + ([at_all] if 0 in values else [])))
    if ticks and max(ticks) / min(ticks) >= 8:
        ax.set_xscale("log")
    ax.set_xticks(ticks, [f"all ({at_all})" if 0 in values and t == at_all else str(t) for t in ticks])
    ax.minorticks_off()
    ax.set_xlabel("k of mAP@k (--topk)")
    ax.set_ylabel("mAP@k")
    sub = describe(fixed, chosen, ["hash_len", "k", "tau"])
    ax.set_title(f"mAP@k vs k on {dataset}" + (f"\n{sub}" if sub else ""), fontsize=10)
    legend(ax, len(chosen))
    return fig


def database_size(log_dir, chosen: dict[str, list[dict]]) -> int | None:
    if log_dir is None:
        return None
    for rs in chosen.values():
        for r in rs:
            try:
                with np.load(Path(log_dir) / "runs" / str(r["run_id"]) / "codes.npz", allow_pickle=False) as z:
                    return int(len(z["db_labels"]))
            except (OSError, KeyError, ValueError):
                continue
    return None


def fig_map_vs_tau(rows: list[dict], dataset: str | None = None):
    """mAP against the bit threshold tau of b = sign(P - tau), one line per HAGCN filter."""
    rows, dataset = dataset_rows(rows, dataset)
    lines = {r["line"] for r in rows if r["method"] == "hagcn"}
    chosen, fixed = select(rows, "tau", lines)
    need_variation(chosen, "tau", "threshold tau", dataset)
    fig, ax = new_figure()
    draw_lines(ax, chosen, "tau")
    taus = sorted({r["tau"] for rs in chosen.values() for r in rs})
    ax.set_xticks(taus, [f"{t:g}" for t in taus])
    ax.set_xlabel("bit threshold \u03c4 (--tau)")
    ax.set_ylabel(map_label(fixed.get("topk")))
    sub = describe(fixed, chosen, ["hash_len", "k"])
    ax.set_title(f"HAGCN {map_label(fixed.get('topk'))} vs \u03c4 on {dataset}" + (f"\n{sub}" if sub else ""),
                 fontsize=10)
    legend(ax, len(chosen))
    return fig


def default_bits(rows: list[dict]) -> int:
    """The code length most methods were run at; ties go to the one closest to 32 bits."""
    lines_at = defaultdict(set)
    for r in rows:
        lines_at[r["hash_len"]].add(r["line"])
    return max(lines_at, key=lambda b: (len(lines_at[b]), -abs(math.log2(b / 32))))


def fig_pr(rows: list[dict], log_dir: str | Path, dataset: str | None = None, bits: int | None = None):
    """Precision-recall curves over Hamming radii 0..L (from each run's run.json), one per method, at one code
    length (default: the one most methods were run at)."""
    rows, dataset = dataset_rows(rows, dataset)
    bits = default_bits(rows) if bits is None else bits
    at_bits = [r for r in rows if r["hash_len"] == bits]
    if not at_bits:
        raise Skip(f"{dataset}: no runs at {bits} bits (there are {sorted({r['hash_len'] for r in rows})})")
    chosen, fixed = select(at_bits, "hash_len", reference=rows)  # one setting per line, the main grid's
    fig, ax = new_figure()
    drawn = 0
    for line, rs in chosen.items():
        curves = []
        for r in rs:
            metrics = read_run_json(Path(log_dir), r["run_id"]).get("metrics", {})
            if "pr_precision" in metrics and "pr_recall" in metrics:
                curves.append((np.asarray(metrics["pr_recall"], float), np.asarray(metrics["pr_precision"], float)))
        if not curves:
            print(f"note: {label_of(line)}: no precision-recall curve in its run.json", file=sys.stderr)
            continue
        recall = np.mean([c[0] for c in curves], axis=0)
        precision = np.mean([c[1] for c in curves], axis=0)
        st = style(line)
        if len(recall) > 33:
            st["markevery"] = max(1, len(recall) // 16)
        ax.plot(recall, precision, label=label_of(line), **st)
        drawn += 1
    if not drawn:
        plt.close(fig)
        raise Skip(f"{dataset}: no run.json with a precision-recall curve at {bits} bits")
    ax.set_xlim(-0.02, 1.02)
    ax.set_ylim(bottom=0)
    ax.set_xlabel("recall")
    ax.set_ylabel("precision")
    sub = describe(fixed, chosen, ["k", "tau"]).replace("mean \u00b1 std where", "mean where")
    ax.set_title(f"Precision-recall over Hamming radius 0..{bits} on {dataset}, {bits} bits"
                 + (f"\n{sub}" if sub else ""), fontsize=10)
    legend(ax, drawn)
    return fig


def unpack_codes(packed: np.ndarray, n_bits: int) -> np.ndarray:
    """np.packbits rows back to (n, n_bits) {0,1} uint8."""
    return np.unpackbits(np.asarray(packed, np.uint8), axis=1)[:, :n_bits]


def pick_tsne_run(rows: list[dict], bits: int | None) -> dict:
    """The best HAGCN run (highest mAP) at `bits` (default as for the PR curves); any method if no HAGCN run."""
    bits = default_bits(rows) if bits is None else bits
    chosen, _ = select([r for r in rows if r["hash_len"] == bits] or rows, "hash_len", reference=rows)
    candidates = [r for rs in chosen.values() for r in rs]
    hagcn = [r for r in candidates if r["method"] == "hagcn"]
    return max(hagcn or candidates, key=lambda r: float(r["map"]))


def fig_tsne(log_dir: str | Path, run_id: str | None = None, rows: list[dict] | None = None,
             dataset: str | None = None, bits: int | None = None, n: int = 1000, seed: int = 0):
    """t-SNE (Hamming metric) of a random sample of n database codes of one run, coloured by class (multi-label:
    by each item's first class)."""
    from sklearn.manifold import TSNE
    log_dir = Path(log_dir)
    row = None
    if run_id is None:
        rows, dataset = dataset_rows(rows if rows is not None else load_rows(log_dir), dataset)
        row = pick_tsne_run(rows, bits)
        run_id = str(row["run_id"])
    path = log_dir / "runs" / str(run_id) / "codes.npz"
    try:
        with np.load(path, allow_pickle=False) as z:
            codes = unpack_codes(z["db_codes"], int(z["n_bits"]))
            labels, classes = z["db_labels"], [str(c) for c in z["classes"]]
    except (OSError, KeyError, ValueError) as e:
        raise Skip(f"{path}: cannot read database codes ({e})")
    settings = read_run_json(log_dir, run_id).get("settings", {})
    rng = np.random.default_rng(seed)
    take = np.sort(rng.choice(len(codes), min(n, len(codes)), replace=False))
    codes, labels = codes[take], labels[take]
    if labels.ndim == 2:  # multi-label: coloured by each item's first class
        labels = labels.argmax(axis=1)
    if len(codes) < 5:
        raise Skip(f"{path}: {len(codes)} database codes are too few for a t-SNE")
    emb = TSNE(n_components=2, metric="hamming", init="pca", perplexity=min(30.0, (len(codes) - 1) / 3),
               random_state=seed).fit_transform(codes.astype(np.float32))
    fig, ax = plt.subplots(figsize=FIGSIZE, dpi=DPI, layout="constrained")
    present = np.unique(labels)
    many = len(classes) > 20
    cmap = plt.get_cmap("tab10" if len(classes) <= 10 else "tab20" if not many else "turbo")
    for c in present:
        mask = labels == c
        color = cmap(c / max(len(classes) - 1, 1)) if many else cmap(int(c))
        ax.scatter(emb[mask, 0], emb[mask, 1], s=14 if len(codes) <= 500 else 6, color=color, alpha=0.8, linewidths=0,
                   label=classes[c] if c < len(classes) else str(c))
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_xlabel("t-SNE 1")
    ax.set_ylabel("t-SNE 2")
    method = settings.get("method", row["method"] if row else "?")
    name = f"HAGCN {settings.get('task')}" if method == "hagcn" else DISPLAY.get(method, method)
    score = f", {map_label(settings.get('topk'))} {float(row['map']):.3f}" if row else ""
    ax.set_title(f"t-SNE of {len(codes)} database codes (Hamming distance)\n"
                 f"{name}, {codes.shape[1]} bits on {settings.get('dataset', dataset or '')}{score}", fontsize=10)
    if many:
        ax.text(0.99, 0.01, f"colour = class ({len(classes)} classes)", transform=ax.transAxes, ha="right",
                va="bottom", fontsize=8)
    else:
        ax.legend(fontsize=7, markerscale=2.5 if len(codes) > 500 else 1.5, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0,
                  frameon=False, title="class", title_fontsize=8)
    fig.run_id = run_id
    return fig


def read_epochs(run_dir: Path) -> dict[str, np.ndarray]:
    """{column: values} of a run's epochs.csv (train.train's per-epoch mean loss terms, rate and validation mAP; NaN
    where an epoch has no value, e.g. val_map between validations); {} when there is none."""
    try:
        with open(run_dir / "epochs.csv", newline="") as f:
            raw = list(csv.DictReader(f))
    except OSError:
        return {}
    return {key: np.asarray([float(r[key]) if r[key] else np.nan for r in raw]) for key in (raw[0] if raw else [])}


NOT_LOSSES = ("epoch", "seconds", "lr", "val_map", "val_seconds")


def fig_loss_curves(rows: list[dict], log_dir: str | Path, dataset: str | None = None, bits: int | None = None):
    """Learning curves: per-epoch training losses (each term and their total, from epochs.csv) and, on a second axis,
    the validation mAP, one panel per deep method (HAGCN: per filter), for the first fold of the first run of each
    at one code length (default: as fig_pr)."""
    rows, dataset = dataset_rows(rows, dataset)
    bits = bits if bits is not None else default_bits(rows)
    curves = {}
    for r in sorted(rows, key=lambda r: (line_order(r["line"]), r.get("fold") or 0)):
        if r["hash_len"] == bits and r["line"] not in curves:
            epochs = read_epochs(Path(log_dir) / "runs" / str(r["run_id"]))
            if epochs:
                curves[r["line"]] = (r["run_id"], epochs)
    if not curves:
        raise Skip(f"{dataset}: no run at {bits} bits has an epochs.csv (closed-form methods do not train)")
    ncols = min(3, len(curves))
    nrows = math.ceil(len(curves) / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(3.8 * ncols, 2.8 * nrows), dpi=DPI, layout="constrained",
                             squeeze=False)
    for ax, (line, (_, epochs)) in zip(axes.flat, curves.items()):
        losses = {k: v for k, v in epochs.items() if k not in NOT_LOSSES}
        for name, values in losses.items():
            ax.plot(epochs["epoch"], values, label=name, linewidth=2.0 if name == "total" else 1.2,
                    color="black" if name == "total" else None)
        if all(np.nanmin(v) > 0 for v in losses.values()):
            ax.set_yscale("log")
        val = epochs.get("val_map")
        if val is not None and np.isfinite(val).any():
            twin = ax.twinx()
            seen = np.isfinite(val)
            twin.plot(epochs["epoch"][seen], val[seen], color="tab:red", linestyle="--", marker=".", markersize=3,
                      label="validation mAP")
            twin.set_ylabel("validation mAP", fontsize=8, color="tab:red")
            twin.tick_params(axis="y", labelsize=7, colors="tab:red")
        ax.set_title(label_of(line), fontsize=9)
        ax.set_xlabel("epoch", fontsize=8)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=6, framealpha=0.85)
    for ax in list(axes.flat)[len(curves):]:
        ax.set_visible(False)
    fig.suptitle(f"Learning curves on {dataset}, {bits} bits: training loss (mean over each epoch's steps) and "
                 "validation mAP (dashed)", fontsize=10)
    fig.runs = {line: run_id for line, (run_id, _) in curves.items()}
    return fig


# ----------------------------------------------------------------------------- CLI

def save(fig, path: Path) -> Path:
    """The figure as a PNG at `path`, written atomically (results.atomic_write: never half a file on a full disk)."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise OutputError(f"{path.parent}: cannot create ({e.strerror})") from e
    try:
        atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=DPI, bbox_inches="tight"))
    finally:
        plt.close(fig)
    return path


def figures_for(rows: list[dict], dataset: str, log_dir: Path, bits: int | None, run_id: str | None, tsne_n: int):
    """(file stem, thunk) for every figure of one dataset."""
    yield "map_vs_bits", lambda: fig_map_vs_bits(rows, dataset)
    yield "map_vs_k", lambda: fig_map_vs_k(rows, dataset)
    yield "map_vs_topk", lambda: fig_map_vs_topk(rows, dataset, log_dir)
    yield "map_vs_tau", lambda: fig_map_vs_tau(rows, dataset)
    pr_bits = bits if bits is not None else default_bits([r for r in rows if r.get("dataset") == dataset])
    yield f"pr_{pr_bits}bits", lambda: fig_pr(rows, log_dir, dataset, pr_bits)
    yield "tsne", lambda: fig_tsne(log_dir, run_id, rows, dataset, pr_bits, n=tsne_n)
    yield f"losses_{pr_bits}bits", lambda: fig_loss_curves(rows, log_dir, dataset, pr_bits)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="Draw the figures of the runs in <log_dir>/results.csv.",
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--log_dir", default="logs", help="main.py's --log_dir (results.csv, runs/)")
    p.add_argument("--out", default="images", help="folder for the PNG files")
    p.add_argument("--dataset", default=None, help="only this dataset (default: every dataset in results.csv)")
    p.add_argument("--bits", type=int, default=None,
                   help="code length of the precision-recall and t-SNE figures (default: the one most methods ran at)")
    p.add_argument("--run_id", default=None, help="run of the t-SNE figure (default: the best HAGCN run at --bits)")
    p.add_argument("--tsne_n", type=int, default=1000, help="database codes in the t-SNE sample")
    args = p.parse_args(argv)
    log_dir, out = Path(args.log_dir), Path(args.out)
    try:
        rows = load_rows(log_dir)
    except FileNotFoundError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    datasets = list(dict.fromkeys(str(r.get("dataset")) for r in rows))
    if args.dataset is not None and args.dataset not in datasets:
        print(f"error: --dataset {args.dataset}: no runs in {log_dir / 'results.csv'} "
              f"(it has {', '.join(datasets) or 'none'})", file=sys.stderr)
        return 2
    if args.tsne_n < 5:
        print(f"error: --tsne_n {args.tsne_n}: must be at least 5", file=sys.stderr)
        return 2
    run_dataset = {str(r.get("run_id")): str(r.get("dataset")) for r in rows}
    if args.run_id is not None and args.run_id not in run_dataset:
        print(f"error: --run_id {args.run_id}: not in {log_dir / 'results.csv'}", file=sys.stderr)
        return 2
    for dataset in [args.dataset] if args.dataset else datasets:
        run_id = args.run_id if args.run_id and run_dataset[args.run_id] == dataset else None
        stems = figures_for(rows, dataset, log_dir, args.bits, run_id, args.tsne_n)
        for stem, make in stems:
            try:
                fig = make()
            except Skip as e:
                print(f"skip {dataset}_{stem}: {e}", file=sys.stderr)
                continue
            try:
                print(f"wrote {save(fig, out / f'{dataset}_{stem}.png')}")
            except OutputError as e:
                print(f"error: {e}", file=sys.stderr)
                return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
