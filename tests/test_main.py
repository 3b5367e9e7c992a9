"""main.py end to end, as a user runs it (`python main.py ... --log_dir DIR` in a subprocess): the printed table
(rows = filters, columns = bit lengths), results.csv, the run folders, determinism across processes, skipping
finished runs, and --resume after a SIGKILL giving the same codes and table as an uninterrupted run."""
from __future__ import annotations

import csv
import fcntl
import json
import os
import pty
import re
import signal
import struct
import subprocess
import sys
import termios
import time
from pathlib import Path

import numpy as np
import pytest
import torch

import main
import results
from arguments import METHOD_NAMES, parse_args
import data
from conftest import FAST, REPO, blob_folder, cli_env, popen_cli, run_cli, write_folder

GRID = ["--method", "hagcn", "--task", "gcn", "cheby", "--exp_hash_len", "8", "16", "--seed", "3", *FAST]
REQUIRED = "dataset,method,task,k,knn,hash_len,topk,map,precision_at_k,train_seconds,seed".split(",")


def read_csv(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def codes_of(log_dir: Path) -> dict[str, dict[str, np.ndarray]]:
    """{run_id: every array of its codes.npz}."""
    out = {}
    for path in sorted(log_dir.glob("runs/*/codes.npz")):
        with np.load(path) as z:
            out[path.parent.name] = {k: z[k] for k in z.files}
    return out


def table_of(stdout: str) -> tuple[list[str], dict[str, list[str]]]:
    """(column headers after 'method labels', {row name: cells}) of the printed mAP table."""
    lines = [ln for ln in stdout.splitlines() if ln.strip()]
    head = next(i for i, ln in enumerate(lines) if ln.split()[:2] == ["method", "labels"])
    rows = {ln.split()[0]: ln.split()[1:] for ln in lines[head + 2:]}
    return lines[head].split()[2:], rows


@pytest.fixture(scope="module")
def grid_runs(tmp_path_factory):
    """The same small grid run twice in two processes (logs a and b), then a third time on a's logs."""
    a, b = tmp_path_factory.mktemp("a"), tmp_path_factory.mktemp("b")
    first = run_cli([*GRID, "--log_dir", a])
    second = run_cli([*GRID, "--log_dir", b])
    rows_before = read_csv(a / "results.csv") if first.returncode == 0 else []
    again = run_cli([*GRID, "--log_dir", a])
    return {"a": a, "b": b, "first": first, "second": second, "again": again, "rows_before": rows_before}


def test_table_rows_are_filters_columns_are_bits(grid_runs):
    proc = grid_runs["first"]
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    columns, rows = table_of(proc.stdout)
    assert columns == ["8", "16"]
    assert list(rows) == ["hagcn-gcn", "hagcn-cheby"]
    for cells in rows.values():
        assert cells[0] == "no" and all(0 <= float(c) <= 1 for c in cells[1:])
    assert "mAP@200 on digits" in proc.stdout


def test_results_csv_has_the_required_columns_one_row_per_run(grid_runs):
    rows = grid_runs["rows_before"]
    assert len(rows) == 4
    assert set(REQUIRED) <= set(rows[0])
    assert {(r["task"], r["hash_len"]) for r in rows} == {("gcn", "8"), ("gcn", "16"), ("cheby", "8"), ("cheby", "16")}
    _, table = table_of(grid_runs["first"].stdout)
    for r in rows:
        assert r["dataset"] == "digits" and r["method"] == "hagcn" and r["seed"] == "3" and r["k"] == "4"
        assert r["knn"] == "10" and r["topk"] == "200"
        for key in ("map", "precision_at_k", "train_seconds"):
            assert np.isfinite(float(r[key]))
        assert 0 <= float(r["map"]) <= 1
        assert table[f"hagcn-{r['task']}"][1 + ["8", "16"].index(r["hash_len"])] == f"{float(r['map']):.4f}"


def test_run_folders_hold_checkpoint_codes_and_record(grid_runs):
    log_dir = grid_runs["a"]
    rows = {r["run_id"]: r for r in grid_runs["rows_before"]}
    assert sorted(p.name for p in (log_dir / "runs").iterdir()) == sorted(rows)
    for run_id, row in rows.items():
        run_dir = log_dir / "runs" / run_id
        assert {"checkpoint.pt", "codes.npz", "run.json"} <= {p.name for p in run_dir.iterdir()}
        assert not list(run_dir.glob(".*tmp*"))
        state = torch.load(run_dir / "checkpoint.pt", weights_only=False)
        assert state["epoch"] == 1 and "optimizer" in state and "model" in state
        record = json.loads((run_dir / "run.json").read_text())
        assert record["settings"]["seed"] == 3 and record["args"]["seed"] == 3
        assert record["args"]["exp_hash_len"] == [8, 16] and record["settings"]["hash_len"] == int(row["hash_len"])
        env = record["environment"]
        assert env["torch"] == torch.__version__ and env["numpy"] == np.__version__
        assert {"python", "scipy", "scikit-learn"} <= set(env)
        assert re.fullmatch(r"[0-9a-f]{40}", env["git_commit"] or "")
        with np.load(run_dir / "codes.npz") as z:
            bits = int(z["n_bits"])
            assert bits == int(row["hash_len"])
            q = np.unpackbits(z["query_codes"], axis=1)[:, :bits]
            assert q.shape == (len(z["query_labels"]), bits) and len(z["db_codes"]) == len(z["db_labels"])
            assert len(z["query_index"]) + len(z["db_index"]) == 360  # 20% of digits' 1,797 items held out


def test_same_seed_same_codes_in_two_processes(grid_runs):
    assert grid_runs["second"].returncode == 0, grid_runs["second"].stderr
    a, b = codes_of(grid_runs["a"]), codes_of(grid_runs["b"])
    assert sorted(a) == sorted(b) and len(a) == 4
    for run_id in a:
        for key in a[run_id]:
            assert np.array_equal(a[run_id][key], b[run_id][key]), (run_id, key)
    assert grid_runs["first"].stdout == grid_runs["second"].stdout


def test_rerun_skips_finished_runs(grid_runs):
    proc = grid_runs["again"]
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.count("skip ") == 4
    assert read_csv(grid_runs["a"] / "results.csv") == grid_runs["rows_before"]
    assert proc.stdout == grid_runs["first"].stdout


def test_global_graph_is_built_once_per_fold_and_shared_through_its_cache(tmp_path):
    """The first grid builds the fold's global graph; a second grid with another filter and code length loads it
    from log_dir/graphs instead of building it again; the identity ablation trains beside the filters."""
    first = run_cli(["--method", "hagcn", "--task", "identity", "gcn", "--exp_hash_len", "8", "16", *FAST,
                     "--log_dir", tmp_path])
    assert first.returncode == 0, first.stderr
    assert first.stderr.count("global graph of") == 1
    assert len(list((tmp_path / "graphs").glob("graph-*.npz"))) == 1
    assert set(table_of(first.stdout)[1]) == {"hagcn-identity", "hagcn-gcn"}
    second = run_cli(["--method", "hagcn", "--task", "cheby", "--exp_hash_len", "12", *FAST, "--log_dir", tmp_path])
    assert second.returncode == 0, second.stderr
    assert "global graph of" not in second.stderr
    fresh = run_cli(["--method", "hagcn", "--task", "cheby", "--exp_hash_len", "12", *FAST,
                     "--log_dir", tmp_path / "fresh"])
    assert fresh.returncode == 0 and fresh.stderr.count("global graph of") == 1
    assert fresh.stdout == second.stdout                 # a cached graph trains the same codes as a new one


def test_a_cached_approximate_graph_is_not_reused_under_other_approximate_settings(tmp_path, monkeypatch):
    """The cache key names the approximate path's settings (graph.approximate_settings), so changing them builds
    the graph again; exact graphs (settings None) keep the key they always had."""
    X = np.random.default_rng(0).standard_normal((60, 8)).astype(np.float32)
    args = parse_args(["--knn", "5", "--neighbour_pool", "6", "--log_dir", str(tmp_path)])
    main.global_graph(X, args, tmp_path)
    exact = set(tmp_path.glob("graph-*.npz"))
    main.global_graph(X, args, tmp_path)
    assert set(tmp_path.glob("graph-*.npz")) == exact
    monkeypatch.setattr(main, "approximate_settings", lambda n: "hnsw A")
    main.global_graph(X, args, tmp_path)
    monkeypatch.setattr(main, "approximate_settings", lambda n: "hnsw B")
    main.global_graph(X, args, tmp_path)
    assert len(set(tmp_path.glob("graph-*.npz")) - exact) == 2


@pytest.mark.parametrize("flag, value", [("--knn", "4"), ("--diffusion_dims", "3"), ("--diffusion_t", "2")])
def test_a_warm_graph_cache_is_not_reused_when_a_graph_setting_changes(tmp_path, monkeypatch, flag, value):
    """--knn, --diffusion_dims and --diffusion_t change the cached arrays (the diffusion map of the --knn graph), so
    each change builds the graph again instead of loading another setting's coordinates."""
    X = np.random.default_rng(0).standard_normal((60, 8)).astype(np.float32)
    built = []
    real = main.graph_arrays
    monkeypatch.setattr(main, "graph_arrays", lambda *a: built.append(a[3]) or real(*a))
    base = ["--knn", "5", "--neighbour_pool", "6", "--diffusion_dims", "4", "--log_dir", str(tmp_path)]
    first = main.global_graph(X, parse_args(base), tmp_path)
    main.global_graph(X, parse_args(base), tmp_path)
    assert len(built) == 1                                  # warm: the same settings load the cache
    other = main.global_graph(X, parse_args([*base, flag, value]), tmp_path)
    assert len(built) == 2 and len(list(tmp_path.glob("graph-*.npz"))) == 2
    assert not torch.equal(first.coords, other.coords)


# ----------------------------------------------------------------------------- the validation split

VAL = ["--method", "hagcn", "dsh", "--task", "gcn", "--exp_hash_len", "8", *FAST, "--val_queries", "60",
       "--val_db", "300", "--num_epochs", "3", "--val_every", "1"]


def test_validation_scores_are_the_map_of_the_kept_models_codes(tmp_path):
    """The val_map of results.csv and of epochs.csv's last row is evaluate.mean_average_precision (tie-aware, shared
    label) of the checkpoint's codes of the validation queries against the validation database."""
    status, rows, args = main.run([*VAL, "--log_dir", str(tmp_path)])
    assert status == 0
    data_, splits = main.load_data(args)
    split = splits[0]
    assert (len(split.val_query), len(split.val_db)) == (60, 300)
    X = data.standardised_rows(data_.X, split.train)
    for row in rows:
        run_dir = tmp_path / "runs" / row["run_id"]
        if row["method"] == "hagcn":
            model, _ = main.build_hagcn("gcn", 8, X.shape[1], args)
        else:
            model, _ = main.baselines.build_deep(row["method"], X.shape[1], 8, 10, args)
        model.load_state_dict(torch.load(run_dir / "checkpoint.pt", weights_only=False)["model"])
        codes = [main.encode(model, X[rows]) for rows in (split.val_query, split.val_db)]
        expected = main.mean_average_precision(*codes, data_.y[split.val_query], data_.y[split.val_db], 200,
                                               ties="expected")
        epochs = read_csv(run_dir / "epochs.csv")
        assert float(row["val_map"]) == pytest.approx(expected, abs=1e-6)
        assert epochs[-1]["val_map"] == row["val_map"] and all(r["val_map"] for r in epochs)


def test_query_and_database_rows_never_reach_the_validation(tmp_path):
    """Replace every query and database row by noise and shuffle their labels: the training (every loss) and every
    validation score stay the same to the last digit, while the test mAP moves. Only training rows are read."""
    from sklearn.datasets import load_digits
    digits = load_digits()
    X, y = digits.data.astype(np.float32), digits.target.astype(np.int64)
    split = data.make_splits(y, "ref", 1, 0, val_queries=60, val_db=300)[0]
    assert not set(split.val_query) & set(split.train) and set(split.val_db) <= set(split.train)
    held_out = np.concatenate([split.query, split.db])
    assert not set(held_out) & (set(split.val_query) | set(split.val_db) | set(split.train))
    X2, y2 = X.copy(), y.copy()
    X2[held_out] = np.random.default_rng(1).normal(size=(len(held_out), X.shape[1])) * 9
    y2[held_out] = np.random.default_rng(2).permutation(y[held_out])
    runs = {}
    for name, (features, labels) in {"a": (X, y), "b": (X2, y2)}.items():
        np.save(tmp_path / f"X{name}.npy", features)
        np.save(tmp_path / f"Y{name}.npy", labels)
        status, rows, _ = main.run([*VAL, "--features", str(tmp_path / f"X{name}.npy"),
                                    "--labels", str(tmp_path / f"Y{name}.npy"), "--log_dir", str(tmp_path / name)])
        assert status == 0
        runs[name] = rows
    for a, b in zip(runs["a"], runs["b"]):
        assert a["val_map"] == b["val_map"]
        drop = lambda rs: [{k: v for k, v in r.items() if "seconds" not in k} for r in rs]
        assert drop(read_csv(tmp_path / "a" / "runs" / a["run_id"] / "epochs.csv")) == \
            drop(read_csv(tmp_path / "b" / "runs" / b["run_id"] / "epochs.csv"))
        assert a["map"] != b["map"]


# ----------------------------------------------------------------------------- crash and resume

RESUME = ["--method", "hagcn", "--task", "gcn", "--exp_hash_len", "8", "16", "--num_epochs", "10", "--hidden", "128",
          "--batch_size", "32", "--seed", "1"]


def checkpoint_epoch(path: Path) -> int:
    try:
        return torch.load(path, weights_only=False)["epoch"]
    except (OSError, RuntimeError, EOFError, KeyError):
        return -1


def test_sigkill_then_resume_gives_the_uninterrupted_codes_and_table(tmp_path):
    """Kill the grid while its second run (16 bits) trains, after a checkpoint of epoch >= 1; rerun with --resume:
    the finished 8-bit run is skipped, the 16-bit run continues from its checkpoint, and the codes and the table
    equal those of an uninterrupted run with the same seed, bit for bit."""
    full = run_cli([*RESUME, "--log_dir", tmp_path / "full"])
    assert full.returncode == 0, full.stderr

    cut = tmp_path / "cut"
    proc = popen_cli([*RESUME, "--log_dir", cut])
    deadline, pending = time.monotonic() + 240, []
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            done = read_csv(cut / "results.csv") if (cut / "results.csv").is_file() else []
            if len(done) == 1:
                pending = [p for p in cut.glob("runs/*/checkpoint.pt") if p.parent.name != done[0]["run_id"]]
                if pending and checkpoint_epoch(pending[0]) >= 1:
                    proc.send_signal(signal.SIGKILL)
                    break
            time.sleep(0.02)
    finally:
        proc.kill()
        proc.communicate()
    assert proc.returncode == -signal.SIGKILL, "the run finished before it could be interrupted"
    assert len(read_csv(cut / "results.csv")) == 1
    assert 1 <= checkpoint_epoch(pending[0]) < 9

    resumed = run_cli([*RESUME, "--log_dir", cut, "--resume"])
    assert resumed.returncode == 0, resumed.stderr
    assert resumed.stderr.count("skip ") == 1
    assert re.search(r"hagcn-gcn 16 bits fold 0: resuming from .*checkpoint\.pt after epoch [2-9] of 10", resumed.stderr)
    a, b = codes_of(tmp_path / "full"), codes_of(cut)
    assert sorted(a) == sorted(b) and len(a) == 2
    for run_id in a:
        for key in a[run_id]:
            assert np.array_equal(a[run_id][key], b[run_id][key]), (run_id, key)
    assert resumed.stdout == full.stdout
    drop = lambda rows: [{k: v for k, v in r.items() if k not in ("train_seconds", "finished")} for r in rows]
    assert drop(read_csv(cut / "results.csv")) == drop(read_csv(tmp_path / "full" / "results.csv"))


EARLY = ["--method", "hagcn", "--task", "gcn", "--exp_hash_len", "16", "--num_epochs", "60", "--hidden", "64",
         "--batch_size", "32", "--lr", "3e-3", "--lr_schedule", "constant", "--early_stop", "3", "--val_every", "1",
         "--select_epoch", "best_val", "--seed", "1"]


def test_sigkill_then_resume_with_early_stopping_gives_the_uninterrupted_codes(tmp_path):
    """An early-stopping run killed mid-way and resumed stops at the same epoch, keeps the same best epoch (its
    weights from best.pt, its score from the checkpoint) and gives the same codes as an uninterrupted run."""
    full = run_cli([*EARLY, "--log_dir", tmp_path / "full"])
    assert full.returncode == 0, full.stderr
    (ref,) = read_csv(tmp_path / "full" / "results.csv")
    assert 4 < int(ref["epochs_trained"]) < 60 and int(ref["kept_epoch"]) < int(ref["epochs_trained"])

    cut = tmp_path / "cut"
    proc = popen_cli([*EARLY, "--log_dir", cut])
    deadline = time.monotonic() + 240
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            found = list(cut.glob("runs/*/checkpoint.pt"))
            if found and checkpoint_epoch(found[0]) >= 2:
                proc.send_signal(signal.SIGKILL)
                break
            time.sleep(0.02)
    finally:
        proc.kill()
        proc.communicate()
    assert proc.returncode == -signal.SIGKILL, "the run finished before it could be interrupted"
    assert 2 <= checkpoint_epoch(found[0]) < int(ref["epochs_trained"]) - 1
    resumed = run_cli([*EARLY, "--log_dir", cut, "--resume"])
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming from" in resumed.stderr
    (row,) = read_csv(cut / "results.csv")
    assert (row["epochs_trained"], row["kept_epoch"], row["val_map"], row["map"]) == \
        (ref["epochs_trained"], ref["kept_epoch"], ref["val_map"], ref["map"])
    a, b = codes_of(tmp_path / "full"), codes_of(cut)
    for key in a[ref["run_id"]]:
        assert np.array_equal(a[ref["run_id"]][key], b[row["run_id"]][key]), key


def test_ctrl_c_is_a_one_line_hint_to_resume(tmp_path):
    # one run: 8 bits, with epochs to spare so that a loaded machine cannot finish it before the signal arrives
    proc = popen_cli([*RESUME[:6], *RESUME[7:], "--num_epochs", "100", "--log_dir", tmp_path])
    deadline = time.monotonic() + 120
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            if any(checkpoint_epoch(p) >= 0 for p in tmp_path.glob("runs/*/checkpoint.pt")):
                proc.send_signal(signal.SIGINT)
                break
            time.sleep(0.02)
        _, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 130, err
    assert "Traceback" not in err and "add --resume to continue" in err
    assert not (tmp_path / "results.csv").exists()


def stderr_of_cli(args: list[str], env: dict, terminal: bool, path: Path) -> str:
    """main.py's stderr written to a pseudo-terminal (read back through its master side) or to the file `path`."""
    argv = [sys.executable, str(REPO / "main.py"), *map(str, args)]
    if not terminal:
        with open(path, "w") as err:
            run = subprocess.run(argv, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=err, timeout=300)
        assert run.returncode == 0
        return path.read_text()
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 120, 0, 0))  # a new pty is 0 columns wide
    proc = subprocess.Popen(argv, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=slave)
    os.close(slave)
    out = b""
    while True:
        try:
            chunk = os.read(master, 65536)
        except OSError:  # EIO: the child closed the terminal
            break
        if not chunk:
            break
        out += chunk
    os.close(master)
    proc.communicate(timeout=300)
    assert proc.returncode == 0
    return out.decode(errors="replace")


@pytest.mark.parametrize("terminal, quiet, bar", [(True, False, True), (True, True, False), (False, False, False)],
                         ids=["terminal", "terminal, TQDM_DISABLE=1", "log file"])
def test_the_progress_bar_is_drawn_on_a_terminal_only(tmp_path, terminal, quiet, bar):
    """On a terminal the training bar obeys TQDM_DISABLE; with stderr to a file there is no bar and no carriage
    return, only the plain lines (the global graph, one summary line per finished run)."""
    env = cli_env()
    if not quiet:
        del env["TQDM_DISABLE"]
    err = stderr_of_cli(["--method", "hagcn", "itq", "--task", "gcn", "--exp_hash_len", "8", *FAST,
                         "--log_dir", tmp_path / "logs"], env, terminal, tmp_path / "stderr.txt")
    assert ("it/s" in err or "s/it" in err) is bar
    if not terminal:
        assert "\r" not in err
        lines = err.splitlines()
        assert [ln.split(":")[0] for ln in lines if "fold 0:" in ln] == ["hagcn-gcn 8 bits fold 0", "itq 8 bits fold 0"]
        assert all(re.search(r"mAP@200 0\.\d{4} \(\d+\.\d s", ln) for ln in lines if "fold 0:" in ln)


# ----------------------------------------------------------------------------- in-process (no subprocess start-up)

def test_folds_report_mean_and_std(tmp_path, capsys):
    root = blob_folder(tmp_path / "blobs", n_classes=3, per_class=30)
    argv = ["--root_dir", str(root), "--folds", "3", "--method", "hagcn", "--task", "gcn", "--exp_hash_len", "8", "--num_epochs", "1",
            "--hidden", "16", "--batch_size", "16", "--log_dir", str(tmp_path / "logs")]
    assert main.main(argv) == 0
    out = capsys.readouterr().out
    assert "3 folds" in out and "\u00b1" in out
    rows = read_csv(tmp_path / "logs" / "results.csv")
    assert sorted(r["fold"] for r in rows) == ["0", "1", "2"] and {r["dataset"] for r in rows} == {"blobs"}


def test_paper_repo_flags_and_config_precedence(tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text("num_epochs: 7\nbatch_size: 64\ntask: cheby\nexp_hash_len: [16, 32]\nlr: 1e-3\n")
    args = parse_args(["--config", str(config), "--batch_size", "32", "--k", "3", "--seed", "5", "--device", "cpu",
                       "--num_cls", "10", "--log_dir", str(tmp_path / "logs")])
    assert (args.num_epochs, args.batch_size, args.task, args.exp_hash_len) == (7, 32, ["cheby"], [16, 32])
    assert (args.k, args.seed, args.device, args.num_cls, args.lr) == (3, 5, "cpu", 10, 1e-3)
    assert args.dataset == "digits" and not (tmp_path / "logs").exists()  # created only when a run starts
    assert parse_args(["--root_dir", "x", "--log_dir", str(tmp_path)]).dataset == "folder"


def test_corrupt_checkpoint_on_resume_is_a_one_line_error(tmp_path, capsys):
    argv = ["--method", "hagcn", "--task", "gcn", "--exp_hash_len", "8", "--num_epochs", "1", "--hidden", "16",
            "--subsample", "100", "--log_dir", str(tmp_path)]
    args = parse_args(argv)
    main.load_data(args)  # resolves the defaults that depend on the data (--knn, --val_every)
    run_id = results.run_id_of(main.run_settings(args, "hagcn", "gcn", 8, 0))
    (tmp_path / "runs" / run_id).mkdir(parents=True)
    (tmp_path / "runs" / run_id / "checkpoint.pt").write_bytes(b"not a checkpoint")
    assert main.main([*argv, "--resume"]) == 2
    err = capsys.readouterr().err
    assert "checkpoint.pt: cannot resume" in err and not (tmp_path / "results.csv").exists()
    assert main.main(argv) == 0  # without --resume the run starts over and overwrites it


def test_new_topk_reevaluates_the_saved_codes_without_training(tmp_path):
    """--topk (an evaluation setting) gets its own row, computed from the first run's codes: no second training."""
    base = ["--method", "hagcn", "--task", "gcn", "--exp_hash_len", "8", *FAST, "--log_dir", tmp_path]
    first = run_cli([*base, "--topk", "50"])
    second = run_cli([*base, "--topk", "0"])
    assert first.returncode == 0 and second.returncode == 0, second.stderr
    assert "evaluating the codes of run" in second.stderr
    rows = read_csv(tmp_path / "results.csv")
    assert [r["topk"] for r in rows] == ["50", "0"] and rows[0]["run_id"] != rows[1]["run_id"]
    assert rows[0]["train_seconds"] == rows[1]["train_seconds"]
    runs = codes_of(tmp_path)
    assert np.array_equal(runs[rows[0]["run_id"]]["db_codes"], runs[rows[1]["run_id"]]["db_codes"])
    q, db = (np.unpackbits(runs[rows[1]["run_id"]][k], axis=1, count=8) for k in ("query_codes", "db_codes"))
    labels = runs[rows[1]["run_id"]]
    from evaluate import mean_average_precision
    expected = mean_average_precision(q, db, labels["query_labels"], labels["db_labels"], topk=None, ties="expected")
    assert float(rows[1]["map"]) == pytest.approx(expected, abs=1e-6)
    assert (tmp_path / "runs" / rows[1]["run_id"] / "checkpoint.pt").is_file()


def test_new_ties_reevaluates_the_saved_codes_without_training(tmp_path):
    """--ties (an evaluation setting) gets its own row from the first run's codes; the table shows the chosen mAP
    and every row records both."""
    base = ["--method", "hagcn", "--task", "gcn", "--exp_hash_len", "8", *FAST, "--log_dir", tmp_path]
    first = run_cli([*base, "--ties", "index"])
    second = run_cli(base)  # default: expected
    assert first.returncode == 0 and second.returncode == 0, second.stderr
    assert "evaluating the codes of run" in second.stderr and "ties: expected" in second.stdout
    rows = read_csv(tmp_path / "results.csv")
    assert [r["ties"] for r in rows] == ["index", "expected"] and rows[0]["run_id"] != rows[1]["run_id"]
    assert rows[0]["train_seconds"] == rows[1]["train_seconds"]
    assert [r["map"] for r in rows] == [rows[0]["map_index"], rows[1]["map_expected"]]
    assert rows[0]["map_index"] == rows[1]["map_index"] and rows[0]["map_expected"] == rows[1]["map_expected"]
    assert rows[0]["map_index"] != rows[0]["map_expected"]
    for proc, row in zip((first, second), rows):
        assert table_of(proc.stdout)[1]["hagcn-gcn"][1] == f"{float(row['map']):.4f}"
    runs = codes_of(tmp_path)
    assert np.array_equal(runs[rows[0]["run_id"]]["db_codes"], runs[rows[1]["run_id"]]["db_codes"])
    q, db = (np.unpackbits(runs[rows[1]["run_id"]][k], axis=1, count=8) for k in ("query_codes", "db_codes"))
    labels = runs[rows[1]["run_id"]]
    from evaluate import mean_average_precision
    for ties in ("index", "expected"):
        want = mean_average_precision(q, db, labels["query_labels"], labels["db_labels"], topk=200, ties=ties)
        assert float(rows[1][f"map_{ties}"]) == pytest.approx(want, abs=1e-6)


def test_grid_cells_one_per_method_filter_and_code_length(tmp_path):
    args = parse_args(["--method", "hagcn", "lsh", "--task", "gcn", "cheby", "--exp_hash_len", "8", "16",
                       "--log_dir", str(tmp_path)])
    cells = main.grid_cells(args, fold=2)
    assert [(c.method, c.task, c.bits) for c in cells] == [
        ("hagcn", "gcn", 8), ("hagcn", "gcn", 16), ("hagcn", "cheby", 8), ("hagcn", "cheby", 16),
        ("lsh", "-", 8), ("lsh", "-", 16)]
    assert {c.fold for c in cells} == {2}
    assert [c.desc for c in cells[3:5]] == ["hagcn-cheby 16 bits fold 2", "lsh 8 bits fold 2"]


VAL_SET = main.ValidationSet(np.zeros((2, 2)), np.zeros((3, 2)), np.zeros(2), np.zeros(3), 200)


def captured_train_call(monkeypatch, flags: list[str], run_dir: Path | None, val: bool = False) -> dict:
    """The keyword arguments main.train_from_args hands train.train for these flags (train itself replaced)."""
    calls = []
    monkeypatch.setattr(main, "train", lambda *a, **kw: calls.append(kw) or 1.5)
    args = parse_args(["--knn", "3", "--neighbour_pool", "5", *flags])
    g = main.GlobalGraph(torch.arange(40).reshape(5, 8), torch.rand(5, 4))
    seconds = main.train_from_args(None, None, torch.zeros(5, 2), torch.zeros(5), args, g, "run", run_dir,
                                   val=VAL_SET if val else None)
    assert seconds == 1.5 and len(calls) == 1
    return calls[0]


def test_train_from_args_maps_every_training_flag(monkeypatch, tmp_path):
    """The one mapping of flags to train.train, which main.py and the benches share: a flag it dropped would be
    ignored everywhere (bench/graph_target.py once trained fp32 whatever its configuration's --precision said)."""
    kw = captured_train_call(monkeypatch, ["--precision", "bf16", "--graph_edges", "global", "--lr", "3e-3",
                                           "--batch_size", "32", "--batch_group", "4", "--seed", "7",
                                           "--num_epochs", "3", "--resume", "--lr_schedule", "cosine",
                                           "--warmup_epochs", "2", "--val_every", "3", "--select_epoch", "best_val",
                                           "--early_stop", "4"], tmp_path, val=True)
    assert (kw["precision"], kw["lr"], kw["batch_size"], kw["group"], kw["seed"], kw["num_epochs"], kw["resume"]) == \
        ("bf16", 3e-3, 32, 4, 7, 3, True)
    assert (kw["lr_schedule"], kw["warmup_epochs"]) == ("cosine", 2.0)
    v = kw["validation"]
    assert (v.every, v.select, v.patience) == (3, "best_val", 4) and v.score.__self__ is VAL_SET
    assert torch.equal(kw["neighbours"], torch.arange(40).reshape(5, 8)[:, :5])
    assert torch.equal(kw["edges"], torch.arange(40).reshape(5, 8)[:, :3])
    assert kw["coords"].shape == (5, 4)  # the default --sim_target diffusion uses them
    assert (kw["checkpoint"], kw["history"]) == (tmp_path / "checkpoint.pt", tmp_path / "epochs.csv")


def test_train_from_args_leaves_out_what_the_flags_do_not_use(monkeypatch):
    kw = captured_train_call(monkeypatch, ["--graph_edges", "batch", "--sim_target", "knn", "--batch_group", "1"],
                             None)
    assert (kw["neighbours"], kw["edges"], kw["coords"], kw["checkpoint"], kw["history"], kw["validation"]) == \
        (None,) * 6
    assert (kw["precision"], kw["lr_schedule"], kw["warmup_epochs"]) == ("fp32", "cosine", 1.0)  # the defaults


# ----------------------------------------------------------------------------- feature matrix and multi-label data

SMALL = ["--task", "gcn", "--exp_hash_len", "8", "--num_epochs", "2", "--hidden", "16", "--batch_size", "16"]


def runs_by_key(log_dir: Path) -> dict[tuple, tuple[dict, dict]]:
    """{(method, task, hash_len, fold): (results.csv row, arrays of its codes.npz)}."""
    out = {}
    for row in read_csv(log_dir / "results.csv"):
        with np.load(log_dir / "runs" / row["run_id"] / "codes.npz") as z:
            out[row["method"], row["task"], row["hash_len"], row["fold"]] = (row, {k: z[k] for k in z.files})
    return out


def assert_same_runs(a_dir: Path, b_dir: Path, n: int) -> None:
    """The two log folders hold the same n runs, with equal mAP and equal saved arrays (codes, statistics, labels)."""
    a, b = runs_by_key(a_dir), runs_by_key(b_dir)
    assert set(a) == set(b) and len(a) == n
    for key in a:
        assert a[key][0]["map"] == b[key][0]["map"], key
        for name, arr in a[key][1].items():
            assert np.array_equal(arr, b[key][1][name]), (key, name)


def test_matrix_input_gives_the_codes_of_the_same_folder(tmp_path):
    """One matrix (rows in the folder's class/file order, integer labels, names = the folder's item paths) and
    the per-class folder it came from give the same codes, labels, items and mAP for every kind of method."""
    root = blob_folder(tmp_path / "blobs", n_classes=3, per_class=20)
    folder = main.load_dataset("folder", str(root))
    np.save(tmp_path / "X.npy", folder.X)
    np.save(tmp_path / "y.npy", folder.y.astype(np.int32))
    (tmp_path / "names.txt").write_text("\n".join(folder.items) + "\n")
    methods = ["--method", "hagcn", "itq", "dsh", "shc", *SMALL]
    assert main.main([*methods, "--root_dir", str(root), "--log_dir", str(tmp_path / "a")]) == 0
    assert main.main([*methods, "--features", str(tmp_path / "X.npy"), "--labels", str(tmp_path / "y.npy"),
                      "--names", str(tmp_path / "names.txt"), "--log_dir", str(tmp_path / "b")]) == 0
    assert_same_runs(tmp_path / "a", tmp_path / "b", 4)


def test_packed_memory_map_gives_the_codes_of_the_in_memory_folder(tmp_path):
    """Digits as a per-class folder (loaded into RAM) and packed once as a float32 memory map: training HAGCN (and
    SHC, whose hash centres read every training row) with the same seed gives exactly the same codes, standardisation
    statistics, labels and items."""
    digits = main.load_dataset("digits")
    root = write_folder(tmp_path / "digits", {c: list(digits.X[digits.y == int(c)]) for c in digits.classes})
    data.pack_folder(root, tmp_path / "packed", "float32")
    assert isinstance(main.load_dataset("folder", str(tmp_path / "packed")).X, np.memmap)
    methods = ["--method", "hagcn", "shc", "--task", "gcn", "--exp_hash_len", "16", *FAST]
    assert main.main([*methods, "--root_dir", str(root), "--log_dir", str(tmp_path / "a")]) == 0
    assert main.main([*methods, "--root_dir", str(tmp_path / "packed"), "--log_dir", str(tmp_path / "b")]) == 0
    assert_same_runs(tmp_path / "a", tmp_path / "b", 2)


def test_every_method_runs_end_to_end_on_multi_hot_labels(tmp_path, capsys):
    """--method all on a multi-hot matrix: one note on the random splits, a row per method, 2-D labels in
    codes.npz (the rows of Y at the saved indices), mAP computed with 'share a label' relevance."""
    from evaluate import evaluate_codes
    rng = np.random.default_rng(0)
    Y = (rng.random((120, 4)) < 0.4).astype(np.uint8)
    Y[Y.sum(1) == 0, 3] = 1
    X = (Y @ rng.normal(0, 3, (4, 12)) + rng.normal(0, 1, (120, 12))).astype(np.float16)
    np.save(tmp_path / "X.npy", X)
    np.save(tmp_path / "Y.npy", Y)
    assert main.main(["--features", str(tmp_path / "X.npy"), "--labels", str(tmp_path / "Y.npy"), "--method", "all",
                      *SMALL, "--topk", "10", "--log_dir", str(tmp_path / "logs")]) == 0
    err = capsys.readouterr().err
    assert err.count("multi-label (4 classes") == 1 and "at random" in err
    runs = runs_by_key(tmp_path / "logs")
    assert sorted(k[0] for k in runs) == sorted(METHOD_NAMES)
    for (method, *_), (row, codes) in runs.items():
        assert np.array_equal(codes["db_labels"], Y[codes["db_index"]]) and codes["query_labels"].ndim == 2
        q = np.unpackbits(codes["query_codes"], axis=1, count=8)
        db = np.unpackbits(codes["db_codes"], axis=1, count=8)
        assert float(row["map"]) == pytest.approx(evaluate_codes(q, db, codes["query_labels"], codes["db_labels"],
                                                                 10, ties="expected")["map"], abs=1e-6), method
        assert row["knn"] == "4"  # --knn defaults to the number of classes C


# ----------------------------------------------------------------------------- a full disk

FULL = ["--method", "hagcn", "itq", "--task", "gcn", "--exp_hash_len", "8", *FAST, "--select_epoch", "best_val",
        "--val_queries", "60"]


def failing_replace(target: str):
    """os.replace that fails with ENOSPC when it would create a file named like `target` (the last step of every
    atomic write: the temporary file is complete, the disk refuses the rest)."""
    real = os.replace

    def replace(src, dst):
        name = Path(dst).name
        if name == target or (target == "graph" and name.startswith("graph-")):
            raise OSError(28, "No space left on device", str(dst))
        return real(src, dst)
    return replace


@pytest.mark.parametrize("target", ["graph", "checkpoint.pt", "best.pt", "epochs.csv", "codes.npz", "run.json",
                                    "results.csv"])
def test_a_full_disk_is_one_line_naming_the_file_with_no_temporary_left(tmp_path, monkeypatch, capsys, target):
    """At every write a full disk ends the run with one line naming the file and the cause, status 1, no temporary
    file anywhere, and the rows already in results.csv whole (the first run of the grid finished before)."""
    assert main.main([*FULL, "--method", "lsh", "--log_dir", str(tmp_path)]) == 0
    before = (tmp_path / "results.csv").read_text()
    capsys.readouterr()
    monkeypatch.setattr(os, "replace", failing_replace(target))
    assert main.main([*FULL, "--log_dir", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    (line,) = [ln for ln in err.splitlines() if "error" in ln.lower()]  # after the progress lines, one error line
    assert line.startswith("error: ") and err.strip().endswith(line) and "Traceback" not in err, err
    assert "No space left on device" in line and (target in line or "graph-" in line), line
    assert not [p for p in tmp_path.rglob("*") if ".tmp" in p.name]
    assert (tmp_path / "results.csv").read_text() == before


def test_a_figure_on_a_full_disk_is_one_line(tmp_path, monkeypatch, capsys):
    import plots
    assert main.main([*FULL, "--log_dir", str(tmp_path / "logs")]) == 0
    monkeypatch.setattr(os, "replace", failing_replace("digits_pr_8bits.png"))
    assert plots.main(["--log_dir", str(tmp_path / "logs"), "--out", str(tmp_path / "figures")]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error: ") and "digits_pr_8bits.png" in err[-1] and "No space" in err[-1]
    assert not [p for p in tmp_path.rglob("*") if ".tmp" in p.name]


@pytest.mark.skipif(os.geteuid() != 0 or sys.platform != "linux", reason="mounts a small tmpfs (root, Linux)")
def test_a_real_full_file_system_is_one_line(tmp_path):
    """main.py on a 256 KiB tmpfs: the global graph's cache (about 850 KB on digits) does not fit."""
    disk = tmp_path / "disk"
    disk.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(disk)]).returncode != 0:
        pytest.skip("cannot mount a tmpfs here")
    try:
        run = run_cli([*FULL, "--log_dir", disk / "logs"])
        left = [p.name for p in disk.rglob("*") if ".tmp" in p.name]
    finally:
        subprocess.run(["umount", str(disk)])
    assert run.returncode == 1
    lines = run.stderr.strip().splitlines()
    assert lines[-1].startswith("error: ") and "graph-" in lines[-1] and "No space left on device" in lines[-1]
    assert "Traceback" not in run.stderr and not left


@pytest.mark.parametrize("train, val_rows, every", [(55000, 6000, 1), (1294, 1437, 8), (1079, 1199, 8), (10, 0, 1)])
def test_the_default_validation_interval_keeps_it_under_5_percent(train, val_rows, every):
    """Fashion-MNIST (55,000 training rows, 1,000 + 5,000 validation rows) every epoch, digits every 8th; without a
    validation split, 1 (nothing is scored anyway)."""
    queries = min(val_rows, 143)
    split = data.Split(np.arange(train), np.arange(1), np.arange(1), np.arange(queries), np.arange(val_rows - queries))
    assert main.validation_every(split) == every
    assert every == 1 or val_rows / (3 * train * every) < 0.05


def test_the_resolved_interval_is_recorded(tmp_path):
    status, rows, args = main.run(["--method", "lsh", "--exp_hash_len", "8", "--log_dir", str(tmp_path)])
    assert status == 0 and args.val_every == 8
    assert json.loads((tmp_path / "runs" / rows[0]["run_id"] / "run.json").read_text())["args"]["val_every"] == 8
