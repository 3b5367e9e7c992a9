"""bench/gpu_extras.py: the ablations (batch size, threads, Adam), on the CPU at toy sizes."""
from __future__ import annotations

import re
import sys

import pytest
import torch

import data
from conftest import REPO

sys.path.append(str(REPO / "bench"))  # after the repository: bench/ must not shadow the project's modules

import gpu_extras  # noqa: E402


def table_rows(out: str, title: str) -> list[list[str]]:
    """The body rows of the table titled `title` in `out`, cells split where bench's tables put two spaces."""
    lines = out[out.index(title):].splitlines()
    rules = [i for i, line in enumerate(lines) if line and set(line) == {"-"}]
    return [re.split(r"\s{2,}", line.strip()) for line in lines[rules[1] + 1:rules[2]]]


@pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA is available here")
def test_without_cuda_the_gpu_run_says_so(capsys):
    assert gpu_extras.main(["--device", "cuda"]) == 2
    assert "CUDA is not available" in capsys.readouterr().err


@pytest.mark.skipif(not (data.FASHION_MNIST_DIR / "train-images-idx3-ubyte.gz").is_file(),
                    reason="Debian's dataset-fashion-mnist is not installed")
def test_every_ablation_table_at_toy_sizes(monkeypatch, tmp_path, capsys):
    """1,500 rows (the graph cache in tmp_path): a row per batch size, per filter and thread count, per model and
    Adam implementation; each once stopped on the default diffusion target without the rows' coordinates."""
    monkeypatch.chdir(tmp_path)
    assert gpu_extras.main(["--n_train", "1500", "--profile_steps", "3"]) == 0
    out = capsys.readouterr().out
    batch = table_rows(out, "Extras A")
    assert [r[0] for r in batch] == ["64", "128", "256", "512", "1024"]
    assert all(len(r) == 5 and min(map(float, r[1:])) > 0 for r in batch)  # no via-CPU columns on the CPU
    threads = table_rows(out, "Extras B")
    assert [r[0] for r in threads] == ["gcn", "cheby", "fourier"]
    assert all(len(r) == 1 + len({1, torch.get_num_threads()}) and float(r[1]) > 0 for r in threads)
    adam = table_rows(out, "Extras D")
    assert [r[0] for r in adam] == ["gcn", "cheby"]
    assert all(len(r) == 7 and r[1].endswith("M") and float(r[-1]) > 0 for r in adam)
