"""Shared fixtures: the repository on sys.path, a CLI runner (main.py in a subprocess, quiet progress bars, one
thread so that two runs on a shared machine stay comparable) and a builder of per-class .npy folders."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("TQDM_DISABLE", "1")  # read by tqdm when it is first imported: no bars in-process either

# small settings that train HAGCN on digits in about a second
FAST = ["--hidden", "64", "--num_epochs", "2", "--batch_size", "128"]


def cli_env() -> dict:
    """Environment of CLI subprocesses: no tqdm bars, one BLAS/OpenMP thread, the repository importable."""
    env = dict(os.environ, TQDM_DISABLE="1", OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONHASHSEED="0")
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    return env


def run_cli(args: list[str], timeout: float = 300) -> subprocess.CompletedProcess:
    """`python main.py ARGS` from the repository root; returns the finished process (text stdout/stderr)."""
    return subprocess.run([sys.executable, str(REPO / "main.py"), *map(str, args)], cwd=REPO, env=cli_env(),
                          capture_output=True, text=True, timeout=timeout)


def popen_cli(args: list[str]) -> subprocess.Popen:
    """`python main.py ARGS` started in the background (for tests that interrupt it), with SIGINT at its default as
    in a terminal: a suite started as a background job (`cmd &` in a script) ignores SIGINT, and its children would
    inherit that, so Python would never turn Ctrl-C into KeyboardInterrupt."""
    return subprocess.Popen([sys.executable, str(REPO / "main.py"), *map(str, args)], cwd=REPO, env=cli_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))


def write_folder(root: Path, classes: dict[str, list[np.ndarray]]) -> Path:
    """ROOT/<class>/item_<i>.npy, one file per array (the paper repo's input format)."""
    for name, vectors in classes.items():
        (root / name).mkdir(parents=True, exist_ok=True)
        for i, v in enumerate(vectors):
            np.save(root / name / f"item_{i:04d}.npy", v)
    return root


def blob_folder(root: Path, n_classes: int = 3, per_class: int = 20, dim: int = 8, seed: int = 0) -> Path:
    """A valid folder of well-separated Gaussian blobs (float32 (d,) vectors), class names '0'..'C-1'."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 5, (n_classes, dim))
    return write_folder(root, {str(c): [(centres[c] + rng.normal(0, 1, dim)).astype(np.float32)
                                        for _ in range(per_class)] for c in range(n_classes)})
