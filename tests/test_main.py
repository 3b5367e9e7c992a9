"""main.py end to end, as a user runs it (`python main.py ... --log_dir DIR` in a subprocess): the printed table
(rows = filters, columns = bit lengths), results.csv, the run folders, determinism across processes, skipping
finished runs, and --resume after a SIGKILL giving the same codes and table as an uninterrupted run."""
from __future__ import annotations

import csv
import json
import re
import signal
import subprocess
import sys
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


@pytest.mark.parametrize("quiet", [True, False], ids=["TQDM_DISABLE=1", "unset"])
def test_tqdm_disable_decides_whether_the_progress_bar_is_drawn(tmp_path, quiet):
    """The training bar obeys TQDM_DISABLE (it did not while train.train passed disable=False explicitly)."""
    env = cli_env()
    if not quiet:
        del env["TQDM_DISABLE"]
    run = subprocess.run([sys.executable, str(REPO / "main.py"), "--method", "hagcn", "--task", "gcn",
                          "--exp_hash_len", "8", *FAST, "--log_dir", str(tmp_path)], cwd=REPO, env=env,
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    assert ("it/s" in run.stderr or "s/it" in run.stderr) is not quiet


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
    args.knn = 10
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


def captured_train_call(monkeypatch, flags: list[str], run_dir: Path | None) -> dict:
    """The keyword arguments main.train_from_args hands train.train for these flags (train itself replaced)."""
    calls = []
    monkeypatch.setattr(main, "train", lambda *a, **kw: calls.append(kw) or 1.5)
    args = parse_args(["--knn", "3", "--neighbour_pool", "5", *flags])
    g = main.GlobalGraph(torch.arange(40).reshape(5, 8), torch.rand(5, 4))
    seconds = main.train_from_args(None, None, torch.zeros(5, 2), torch.zeros(5), args, g, "run", run_dir)
    assert seconds == 1.5 and len(calls) == 1
    return calls[0]


def test_train_from_args_maps_every_training_flag(monkeypatch, tmp_path):
    """The one mapping of flags to train.train, which main.py and the benches share: a flag it dropped would be
    ignored everywhere (bench/graph_target.py once trained fp32 whatever its configuration's --precision said)."""
    kw = captured_train_call(monkeypatch, ["--precision", "bf16", "--graph_edges", "global", "--lr", "3e-3",
                                           "--batch_size", "32", "--batch_group", "4", "--seed", "7",
                                           "--num_epochs", "3", "--resume"], tmp_path)
    assert (kw["precision"], kw["lr"], kw["batch_size"], kw["group"], kw["seed"], kw["num_epochs"], kw["resume"]) == \
        ("bf16", 3e-3, 32, 4, 7, 3, True)
    assert torch.equal(kw["neighbours"], torch.arange(40).reshape(5, 8)[:, :5])
    assert torch.equal(kw["edges"], torch.arange(40).reshape(5, 8)[:, :3])
    assert kw["coords"].shape == (5, 4)  # the default --sim_target diffusion uses them
    assert (kw["checkpoint"], kw["history"]) == (tmp_path / "checkpoint.pt", tmp_path / "epochs.csv")


def test_train_from_args_leaves_out_what_the_flags_do_not_use(monkeypatch):
    kw = captured_train_call(monkeypatch, ["--graph_edges", "batch", "--sim_target", "knn", "--batch_group", "1"],
                             None)
    assert (kw["neighbours"], kw["edges"], kw["coords"], kw["checkpoint"], kw["history"]) == (None,) * 5
    assert kw["precision"] == "fp32"


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
