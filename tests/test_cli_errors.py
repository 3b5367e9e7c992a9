"""Bad input never ends in a traceback: `python main.py` exits with status 2 and one line on stderr naming the flag
or the file, and writes nothing (no log folder, no results.csv row, no half-written file). Every case runs the real
CLI in a subprocess; the subprocesses run side by side (one fixture) to keep the suite short."""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import blob_folder, run_cli, write_folder

TINY = ["--method", "hagcn", "--task", "gcn", "--exp_hash_len", "8", "--num_epochs", "1", "--hidden", "16"]


def folder(tmp: Path, name: str, **extra) -> Path:
    """A valid 3-class blob folder, then `extra` files written into it: {relative path: array or bytes}."""
    root = blob_folder(tmp / name)
    for rel, content in extra.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            np.save(path, content)
    return root


def truncated_npy(tmp: Path) -> bytes:
    np.save(tmp / "full.npy", np.ones(8, np.float32))
    return (tmp / "full.npy").read_bytes()[:-10]


def matrix(tmp: Path, X: np.ndarray | bytes | None = None, Y: np.ndarray | bytes | None = None,
           names: list[str] | None = None) -> list:
    """--features/--labels (and --names) of a valid 40 x 8 matrix with 3-class multi-hot labels, or of the given
    replacements (arrays, or raw bytes written as they are)."""
    rng = np.random.default_rng(0)
    Y_ok = (rng.random((40, 3)) < 0.5).astype(np.uint8)
    Y_ok[:, 0] |= Y_ok.sum(1) == 0
    argv = []
    for flag, value in (("features", rng.normal(size=(40, 8)).astype(np.float32) if X is None else X),
                        ("labels", Y_ok if Y is None else Y)):
        path = tmp / f"{flag}.npy"
        path.write_bytes(value) if isinstance(value, bytes) else np.save(path, value)
        argv += [f"--{flag}", path]
    if names is not None:
        (tmp / "names.txt").write_text("\n".join(names))
        argv += ["--names", tmp / "names.txt"]
    return argv


def matrix_case(tmp: Path, name: str) -> tuple[list, list[str]] | None:
    """(argv, expected substrings) of the feature-matrix cases, None for other names."""
    X = np.ones((40, 8), np.float32)
    if name == "features_missing":
        return ["--features", tmp / "none.npy", "--labels", tmp / "none_y.npy"], ["--features", "none.npy", "no such file"]
    if name == "features_corrupt":
        return matrix(tmp, X=b"not an npy file"), ["--features", "features.npy", "cannot read"]
    if name == "features_npz":
        np.savez(tmp / "X.npz", X=X)
        return ["--features", tmp / "X.npz", *matrix(tmp)[2:]], ["--features", "X.npz", ".npz archive"]
    if name == "features_1d":
        return matrix(tmp, X=np.ones(40, np.float32)), ["--features", "(n, d)", "(40,)"]
    if name == "features_integer":
        return matrix(tmp, X=np.ones((40, 8), np.int32)), ["--features", "float16 or float32", "int32"]
    if name == "features_nan":
        X[23, 5] = np.nan
        return matrix(tmp, X=X.astype(np.float16)), ["--features", "features.npy", "row 23", "NaN or Inf"]
    if name == "labels_rows_mismatch":
        return matrix(tmp, Y=np.zeros(39, np.int64)), ["--labels", "labels.npy", "(40,)", "(39,)"]
    if name == "labels_corrupt":
        return matrix(tmp, Y=b"\x93NUMPY garbage"), ["--labels", "labels.npy", "cannot read"]
    if name == "labels_float_1d":
        return matrix(tmp, Y=np.zeros(40, np.float32)), ["--labels", "must be integers", "float32"]
    if name == "labels_not_0_1":
        return matrix(tmp, Y=np.full((40, 3), 2, np.int64)), ["--labels", "0/1 multi-hot", "other than 0 and 1"]
    if name == "labels_3d":
        return matrix(tmp, Y=np.zeros((40, 3, 1), np.uint8)), ["--labels", "(40, 3, 1)"]
    if name == "labels_item_without_label":
        Y = np.eye(3, dtype=np.uint8)[np.arange(40) % 3]
        Y[[7, 9]] = 0
        return matrix(tmp, Y=Y), ["--labels", "2 item(s) have no label", "row 7"]
    if name == "names_count":
        return matrix(tmp, names=[f"i{k}" for k in range(39)]), ["--names", "names.txt", "39 names", "40 rows"]
    if name == "names_missing":
        return [*matrix(tmp), "--names", tmp / "gone.txt"], ["--names", "gone.txt", "no such file"]
    if name == "features_without_labels":
        return matrix(tmp)[:2], ["--features", "needs --labels"]
    if name == "labels_without_features":
        return matrix(tmp)[2:], ["--labels", "needs --features"]
    if name == "features_with_root_dir":
        return [*matrix(tmp), "--root_dir", folder(tmp, "both")], ["--root_dir", "not with --features"]
    if name == "features_with_other_dataset":
        return [*matrix(tmp), "--dataset", "digits"], ["--features", "not --dataset digits"]
    if name == "dataset_matrix_alone":
        return ["--dataset", "matrix"], ["--dataset matrix", "needs --features"]
    if name == "features_constant":
        return (matrix(tmp, X=np.full((40, 8), 3.5, np.float32), Y=np.arange(40) % 3),
                ["--features", "features.npy", "every feature is constant", "40 items are identical"])
    return None


def case_argv(tmp: Path, name: str) -> tuple[list[str], list[str], int]:
    """(argv, substrings the stderr must contain, expected exit status) of one named case; built in `tmp`."""
    vec = np.ones(8, np.float32)
    found = matrix_case(tmp, name)
    if found is not None:
        return found[0], found[1], 2
    if name == "root_missing":
        return ["--root_dir", tmp / "nowhere"], ["--root_dir", "nowhere", "no such directory"], 2
    if name == "root_empty":
        (tmp / "empty").mkdir()
        return ["--root_dir", tmp / "empty"], ["--root_dir", "empty", "no class folders"], 2
    if name == "root_no_class_folders":
        (tmp / "flat").mkdir()
        for i in range(12):
            np.save(tmp / "flat" / f"{i}.npy", vec)
        return ["--root_dir", tmp / "flat"], ["--root_dir", "flat", "no class folders"], 2
    if name == "empty_class_folder":
        root = folder(tmp, "emptycls")
        (root / "zebra").mkdir()
        return ["--root_dir", root], ["zebra", "no .npy files"], 2
    if name == "corrupt_npy":
        root = folder(tmp, "corrupt", **{"1/bad.npy": b"this is not a numpy file at all"})
        return ["--root_dir", root], ["bad.npy", "cannot read"], 2
    if name == "truncated_npy":
        root = folder(tmp, "trunc", **{"2/cut.npy": truncated_npy(tmp)})
        return ["--root_dir", root], ["cut.npy", "cannot read"], 2
    if name == "different_lengths":
        root = folder(tmp, "lengths", **{"2/long.npy": np.ones(9, np.float32)})
        return ["--root_dir", root], ["long.npy", "(9,)", "item_0000.npy", "(8,)"], 2
    if name == "nan_values":
        root = folder(tmp, "nan", **{"1/nan.npy": np.r_[np.ones(7), np.nan].astype(np.float32)})
        return ["--root_dir", root], ["nan.npy", "NaN or Inf"], 2
    if name == "inf_values":
        root = folder(tmp, "inf", **{"0/inf.npy": np.r_[np.ones(7), -np.inf].astype(np.float32)})
        return ["--root_dir", root], ["inf.npy", "NaN or Inf"], 2
    if name == "not_1_by_d":
        root = folder(tmp, "twod", **{"0/wide.npy": np.ones((2, 4), np.float32)})
        return ["--root_dir", root], ["wide.npy", "(2, 4)"], 2
    if name == "num_cls_disagrees":
        return ["--root_dir", folder(tmp, "numcls"), "--num_cls", "5"], ["--num_cls 5", "3 classes"], 2
    if name == "too_few_items":
        root = write_folder(tmp / "few", {"a": [vec] * 3, "b": [vec * 2] * 3})
        return ["--root_dir", root], ["6 items", "at least 10"], 2
    if name == "too_few_for_split":
        root = write_folder(tmp / "few12", {"a": [vec] * 6, "b": [vec * 2] * 6})
        return ["--root_dir", root, "--split", "standard", "--query_per_class", "6"], ["--query_per_class 6"], 2
    if name == "folds_exceed_items":
        return ["--root_dir", folder(tmp, "folds"), "--folds", "100"], ["--folds 100", "too few"], 2
    if name == "hash_len_0":
        return ["--exp_hash_len", "0"], ["--exp_hash_len 0"], 2
    if name == "hash_len_100000":
        return ["--exp_hash_len", "16", "100000"], ["--exp_hash_len 100000"], 2
    if name == "bits_above_pca_dims":  # digits is 64-d: ITQ has no 128th principal component
        return ["--method", "itq", "--exp_hash_len", "16", "128"], ["--exp_hash_len 128", "itq", "64-d"], 2
    if name == "batch_size_1":
        return ["--batch_size", "1"], ["--batch_size 1"], 2
    if name == "knn_ge_batch":
        return ["--knn", "8", "--batch_size", "8"], ["--knn 8", "--batch_size 8"], 2
    if name == "k_0":
        return ["--k", "0"], ["--k 0"], 2
    if name == "batch_group_0":
        return ["--batch_group", "0"], ["--batch_group 0"], 2
    if name == "neighbour_pool_0":
        return ["--neighbour_pool", "0"], ["--neighbour_pool 0"], 2
    if name == "unknown_task":
        return ["--task", "gcn", "wavelet"], ["--task wavelet", "unknown"], 2
    if name == "unknown_method":
        return ["--method", "hagcn", "magic"], ["--method magic", "unknown"], 2
    if name == "cuda_without_cuda":
        return ["--device", "cuda"], ["--device cuda", "CUDA is not available"], 2
    if name == "config_missing":
        return ["--config", tmp / "none.yaml"], ["--config", "none.yaml", "cannot read"], 2
    if name == "config_invalid_yaml":
        (tmp / "bad.yaml").write_text("task: [gcn\nk: 4: 5\n")
        return ["--config", tmp / "bad.yaml"], ["--config", "bad.yaml", "not valid YAML"], 2
    if name == "config_bad_value":
        (tmp / "val.yaml").write_text("exp_hash_len: [16, sixteen]\n")
        return ["--config", tmp / "val.yaml"], ["val.yaml", "exp_hash_len", "sixteen"], 2
    if name == "log_dir_under_file":
        (tmp / "afile").write_text("x")
        return ["--log_dir", tmp / "afile" / "logs"], ["--log_dir", "afile", "not a directory"], 2
    if name == "log_dir_under_proc":  # /proc passes os.access for root, yet nothing can be created in it
        return ["--log_dir", "/proc/x/logs"], ["--log_dir /proc/x/logs", "cannot create"], 2
    if name == "single_class":
        root = blob_folder(tmp / "one", n_classes=1, per_class=30)
        return ["--root_dir", root], ["--root_dir", "one", "1 class", "mAP needs at least two classes"], 2
    if name == "folder_constant":
        root = write_folder(tmp / "same", {"a": [vec] * 8, "b": [vec] * 8})
        return ["--root_dir", root], ["--root_dir", "same", "every feature is constant"], 2
    if name == "some_features_constant":
        X = np.random.default_rng(0).normal(size=(40, 8)).astype(np.float32)
        X[:, [2, 5]] = 1.0
        return [*matrix(tmp, X=X), "--method", "lsh"], ["warning: --features", "2 of 8 features are constant"], 0
    if name == "non_npy_ignored":
        root = folder(tmp, "mixed", **{"0/notes.txt": b"hello", "1/thumb.png": b"\x89PNG"})
        return ["--root_dir", root], ["ignored 2 non-.npy"], 0
    raise KeyError(name)


CASES = ["root_missing", "root_empty", "root_no_class_folders", "empty_class_folder", "corrupt_npy", "truncated_npy",
         "different_lengths", "nan_values", "inf_values", "not_1_by_d", "num_cls_disagrees", "too_few_items",
         "too_few_for_split", "folds_exceed_items", "hash_len_0", "hash_len_100000", "bits_above_pca_dims",
         "batch_size_1", "knn_ge_batch",
         "k_0", "batch_group_0", "neighbour_pool_0", "unknown_task", "unknown_method", "cuda_without_cuda",
         "config_missing", "config_invalid_yaml", "config_bad_value", "log_dir_under_file", "log_dir_under_proc",
         "single_class", "non_npy_ignored", "folder_constant", "some_features_constant", "features_constant",
         "features_missing", "features_corrupt", "features_npz", "features_1d", "features_integer", "features_nan",
         "labels_rows_mismatch", "labels_corrupt", "labels_float_1d", "labels_not_0_1", "labels_3d",
         "labels_item_without_label", "names_count", "names_missing", "features_without_labels",
         "labels_without_features", "features_with_root_dir", "features_with_other_dataset", "dataset_matrix_alone"]


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory) -> dict:
    """Run every case's CLI once, three at a time: {case: (process, its log dir, expected substrings, status)}."""
    names = [c for c in CASES if not (c == "cuda_without_cuda" and torch.cuda.is_available())]
    tmps = {name: tmp_path_factory.mktemp(name) for name in names}  # mktemp is not thread-safe: before the pool

    def one(name: str):
        tmp = tmps[name]
        argv, expect, status = case_argv(tmp, name)
        log_dir = tmp / "logs"
        if "--log_dir" not in argv:
            argv = [*argv, "--log_dir", log_dir]
        return name, (run_cli([*TINY, *argv]), log_dir, expect, status)
    with ThreadPoolExecutor(3) as pool:
        return dict(pool.map(one, names))


@pytest.mark.parametrize("name", CASES)
def test_bad_input_is_one_line_and_status_2(outcomes, name):
    if name not in outcomes:
        pytest.skip("CUDA is available on this machine")
    proc, log_dir, expect, status = outcomes[name]
    assert "Traceback" not in proc.stderr, proc.stderr
    assert proc.returncode == status, proc.stderr
    if status == 0:
        assert "mAP@200 on " in proc.stdout and all(s in proc.stderr for s in expect), proc.stderr
        return
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    assert all(s in lines[0] for s in expect), lines[0]
    assert proc.stdout == ""
    assert not log_dir.exists() or not any(p.is_file() for p in log_dir.rglob("*")), list(log_dir.rglob("*"))
