"""search.py on real runs of main.py over a per-class .npy folder (a copy of data/digits_sample): a database item's
own .npy file, encoded afresh from the raw vector with the saved training statistics, finds itself first at
Hamming distance 0 (HAGCN and a closed-form baseline); --query_index ranks the database exactly as a brute-force
Hamming ranking of the saved codes does; bad input is one line on stderr and exit status 2."""
from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import REPO, cli_env, run_cli

import search  # noqa: E402


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict:
    tmp = tmp_path_factory.mktemp("search")
    root = tmp / "digits_sample"
    shutil.copytree(REPO / "data" / "digits_sample", root)
    log_dir = tmp / "logs"
    proc = run_cli(["--root_dir", root, "--method", "hagcn", "itq", "--task", "cheby", "--exp_hash_len", "32",
                    "--hidden", "32", "--num_epochs", "2", "--log_dir", log_dir])
    assert proc.returncode == 0, proc.stderr
    run_dirs = {}
    for d in (log_dir / "runs").iterdir():
        method = __import__("json").loads((d / "run.json").read_text())["settings"]["method"]
        run_dirs[method] = d
    assert set(run_dirs) == {"hagcn", "itq"}
    return {"root": root, **run_dirs}


def search_cli(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(REPO / "search.py"), *map(str, args)], cwd=REPO, env=cli_env(),
                          capture_output=True, text=True, timeout=120)


def table(stdout: str) -> list[tuple[int, str, str, int]]:
    """(rank, item, label, distance) rows of the printed result."""
    lines = stdout.splitlines()
    start = next(i for i, ln in enumerate(lines) if ln.split()[:2] == ["rank", "item"]) + 1
    return [(int(p[0]), p[1], p[2], int(p[3])) for p in (ln.split() for ln in lines[start:])]


def saved(run_dir: Path) -> dict:
    with np.load(run_dir / "codes.npz") as z:
        return {k: z[k] for k in z.files}


def first_of_its_code(codes: dict) -> int:
    """The highest database position whose code no lower position shares: the tie rule (lower index first)
    ranks it first among the items at distance 0 from its own code."""
    bits = np.unpackbits(codes["db_codes"], axis=1)
    _, first = np.unique(bits, axis=0, return_index=True)
    return int(first.max())


@pytest.mark.parametrize("method", ["hagcn", "itq"])
def test_database_item_finds_itself(runs, method):
    run_dir, codes = runs[method], saved(runs[method])
    i = first_of_its_code(codes)
    item = str(codes["db_items"][i])
    query = runs["root"] / item  # the raw embedding file of that database item, as a user would pass it
    if method == "hagcn":
        proc = search_cli("--checkpoint", run_dir / "checkpoint.pt", "--query", query, "--topk", 5)
        assert proc.returncode == 0, proc.stderr
        out = proc.stdout
    else:  # in-process: the same main(), without a second interpreter start
        import io
        from contextlib import redirect_stdout
        buf = io.StringIO()
        with redirect_stdout(buf):
            assert search.main(["--checkpoint", str(run_dir / "checkpoint.pt"), "--query", str(query)]) == 0
        out = buf.getvalue()
    rows = table(out)
    assert rows[0][:2] == (1, item) and rows[0][3] == 0
    assert rows[0][2] == str(codes["classes"][codes["db_labels"][i]])
    assert len(rows) == (5 if method == "hagcn" else 10)
    # the fresh code is the saved one, bit for bit
    fresh = next(ln for ln in out.splitlines() if "code " in ln).rsplit("code ", 1)[1]
    assert fresh == "".join(map(str, np.unpackbits(codes["db_codes"][i])[:int(codes["n_bits"])]))


def test_query_index_matches_brute_force(runs):
    run_dir, codes = runs["hagcn"], saved(runs["hagcn"])
    q = 3
    proc = search_cli("--checkpoint", run_dir, "--query_index", q, "--topk", 1000)  # more than the database
    assert proc.returncode == 0, proc.stderr
    assert str(codes["query_items"][q]) in proc.stdout
    rows = table(proc.stdout)
    n_bits = int(codes["n_bits"])
    qb = np.unpackbits(codes["query_codes"][q])[:n_bits]
    db = np.unpackbits(codes["db_codes"], axis=1)[:, :n_bits]
    dist = (db != qb).sum(1)
    order = np.lexsort((np.arange(len(dist)), dist))  # by distance, ties to the lower index
    assert [r[1] for r in rows] == [str(codes["db_items"][j]) for j in order]
    assert [r[3] for r in rows] == list(dist[order])
    assert [r[0] for r in rows] == list(range(1, len(dist) + 1))


def run_main(argv, capsys) -> tuple[int, list[str]]:
    rc = search.main([str(a) for a in argv])
    return rc, capsys.readouterr().err.strip().splitlines()


def test_bad_input(runs, tmp_path, capsys):
    ckpt = runs["hagcn"] / "checkpoint.pt"
    np.save(tmp_path / "short.npy", np.zeros(10, np.float32))
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    bad_run = tmp_path / "bad_run"
    bad_run.mkdir()
    for name in ("run.json", "codes.npz"):
        shutil.copy(runs["hagcn"] / name, bad_run / name)
    (bad_run / "checkpoint.pt").write_bytes(b"garbage")
    item = runs["root"] / str(saved(runs["hagcn"])["db_items"][0])
    cases = [
        (["--checkpoint", ckpt, "--query", tmp_path / "missing.npy"], "missing.npy"),
        (["--checkpoint", bad_run / "checkpoint.pt", "--query", item], "not a readable checkpoint"),
        (["--checkpoint", ckpt, "--query", tmp_path / "short.npy"], "dimension 10"),
        (["--checkpoint", ckpt, "--query_index", 10_000], "--query_index 10000"),
        (["--checkpoint", ckpt, "--query_index", -1], "--query_index -1"),
        (["--checkpoint", tmp_path / "nowhere.pt", "--query_index", 0], "no such file"),
        (["--checkpoint", tmp_path / "junk.pt", "--query_index", 0], "run.json"),
        (["--checkpoint", ckpt, "--query_index", 0, "--topk", 0], "--topk 0"),
        (["--checkpoint", ckpt], "required"),
        (["--checkpoint", ckpt, "--query_index", 0, "--query", tmp_path / "short.npy"], "not allowed"),
    ]
    for argv, needle in cases:
        rc, err = run_main(argv, capsys)
        assert rc == 2 and len(err) == 1 and needle in err[0], (argv, err)


def test_multi_label_run_prints_every_label_and_marks_shared_ones(tmp_path, capsys):
    """A run on a multi-hot matrix: each result's label column lists all its classes joined by '+', and exactly
    the results sharing a class with the query are marked."""
    import main
    rng = np.random.default_rng(0)
    Y = (rng.random((80, 3)) < 0.5).astype(np.uint8)
    Y[Y.sum(1) == 0, 1] = 1
    np.save(tmp_path / "X.npy", (Y @ rng.normal(0, 3, (3, 12)) + rng.normal(0, 1, (80, 12))).astype(np.float32))
    np.save(tmp_path / "Y.npy", Y)
    assert main.main(["--features", str(tmp_path / "X.npy"), "--labels", str(tmp_path / "Y.npy"), "--method", "itq",
                      "--exp_hash_len", "8", "--log_dir", str(tmp_path / "logs")]) == 0
    run_dir = next((tmp_path / "logs" / "runs").iterdir())
    capsys.readouterr()
    assert search.main(["--checkpoint", str(run_dir), "--query_index", "2", "--topk", "8"]) == 0
    out = capsys.readouterr().out.splitlines()
    codes = saved(run_dir)
    names = lambda row: "+".join(str(c) for c in np.flatnonzero(row))
    query = codes["query_labels"][2]
    assert f"(label {names(query)})" in out[1]
    start = next(i for i, ln in enumerate(out) if ln.split()[:2] == ["rank", "item"]) + 1
    rows = out[start:]
    assert len(rows) == 8
    db_bits = np.unpackbits(codes["db_codes"], axis=1, count=8)
    q_bits = np.unpackbits(codes["query_codes"][2:3], axis=1, count=8)
    order = np.argsort((db_bits != q_bits).sum(1), kind="stable")[:8]
    for line, j in zip(rows, order):
        parts = line.split()
        assert parts[1] == str(codes["db_items"][j]) and parts[2] == names(codes["db_labels"][j])
        assert line.endswith("shares a label") == bool((codes["db_labels"][j] & query).any()), line


# ----------------------------------------------------------------------------- --index: the faiss binary indexes

def clustered_codes(n_db: int, n_query: int, n_bits: int = 64, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Packed (database, query) codes of a 40-component Gaussian mixture in 16 dimensions, by the signs of random
    projections (SimHash): nearby points share most bits, so approximate indexes have neighbourhoods to find."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(40, 16))
    X = centres[rng.integers(0, 40, n_db + n_query)] + 0.5 * rng.normal(size=(n_db + n_query, 16))
    packed = np.packbits(X @ rng.normal(size=(16, n_bits)) > 0, axis=1)
    return packed[n_query:], packed[:n_query]


def hamming(query_packed: np.ndarray, db_packed: np.ndarray, indices: np.ndarray) -> np.ndarray:
    """(Q, k) Hamming distances between each query and the database items `indices` lists for it."""
    return np.unpackbits(query_packed[:, None, :] ^ db_packed[indices], axis=2).sum(axis=2)


@pytest.mark.parametrize("n_bits", [16, 64])
def test_faiss_flat_gives_the_exact_distances(n_bits):
    from evaluate import from_packbits, hamming_topk
    db, queries = clustered_codes(3000, 50, n_bits)
    indices, distances = search.nearest(search.binary_index(db, n_bits, "faiss-flat"), queries, 20)
    _, exact = hamming_topk(from_packbits(queries, n_bits), from_packbits(db, n_bits), 20)
    np.testing.assert_array_equal(distances, exact)                  # the same distance profile; ties may reorder
    np.testing.assert_array_equal(hamming(queries, db, indices), exact)


@pytest.mark.parametrize("kind, bound", [("faiss-hnsw", 0.95), ("faiss-ivf", 0.9)])
def test_approximate_indexes_reach_their_recall(kind, bound):
    """recall@10 on clustered codes, a returned item counting when its distance is within the exact 10th
    distance (ties at that distance are interchangeable); measured 1.0 (hnsw) and 0.998 (ivf)."""
    from evaluate import from_packbits, hamming_topk
    db, queries = clustered_codes(5000, 200)
    indices, distances = search.nearest(search.binary_index(db, 64, kind), queries, 10)
    _, exact = hamming_topk(from_packbits(queries, 64), from_packbits(db, 64), 10)
    assert (indices >= 0).all()
    np.testing.assert_array_equal(distances, hamming(queries, db, indices))   # true distances, nearest first
    assert (np.diff(distances, axis=1) >= 0).all()
    recall = (distances <= exact[:, -1:]).mean()
    assert bound <= recall <= 1.0, recall


@pytest.mark.parametrize("kind", ["faiss-flat", "faiss-hnsw", "faiss-ivf"])
def test_index_flag_end_to_end(runs, capsys, kind):
    """--index on a real run (32 bits): the printed distances are the items' true distances, nearest first, and
    with faiss-flat they are the exact ranking's distance profile."""
    codes = saved(runs["hagcn"])
    assert search.main(["--checkpoint", str(runs["hagcn"]), "--query_index", "3", "--topk", "20", "--index", kind]) == 0
    rows = table(capsys.readouterr().out)
    n_bits = int(codes["n_bits"])
    qb = np.unpackbits(codes["query_codes"][3])[:n_bits]
    dist = dict(zip(map(str, codes["db_items"]), (np.unpackbits(codes["db_codes"], axis=1)[:, :n_bits] != qb).sum(1)))
    assert [r[3] for r in rows] == [dist[r[1]] for r in rows] == sorted(r[3] for r in rows)
    if kind == "faiss-flat":
        assert [r[3] for r in rows] == sorted(dist.values())[:20]


def test_index_needs_whole_bytes(runs, tmp_path, capsys):
    """A code length that is not a multiple of 8 is one line naming --index and exit status 2; exact still works."""
    odd = tmp_path / "odd_run"
    shutil.copytree(runs["itq"], odd)
    codes = saved(odd)
    codes["n_bits"] = np.asarray(int(codes["n_bits"]) - 2)      # drop the last two bits of every code
    for key in ("db_codes", "query_codes"):
        codes[key][:, -1] &= np.uint8(0xFC)
    np.savez(odd / "codes.npz", **codes)
    rc, err = run_main(["--checkpoint", odd, "--query_index", 0, "--index", "faiss-hnsw"], capsys)
    assert rc == 2 and len(err) == 1 and "--index faiss-hnsw" in err[0] and "divisible by 8" in err[0], err
    rc, _ = run_main(["--checkpoint", odd, "--query_index", 0, "--index", "exact"], capsys)
    assert rc == 0
