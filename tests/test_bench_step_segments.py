"""bench/step_segments.py: one training step split into segments, HAGCN's forward unrolled."""
from __future__ import annotations

import re
import sys

import pytest

import data
import graph
from conftest import REPO

sys.path.append(str(REPO / "bench"))  # after the repository: bench/ must not shadow the project's modules

import step_segments  # noqa: E402


def table_rows(out: str, title: str) -> list[list[str]]:
    """The body rows of the table titled `title` in `out`, cells split where bench's tables put two spaces."""
    lines = out[out.index(title):].splitlines()
    rules = [i for i, line in enumerate(lines) if line and set(line) == {"-"}]
    return [re.split(r"\s{2,}", line.strip()) for line in lines[rules[1] + 1:rules[2]]]


def test_reuse_lanczos_answers_from_the_cache_and_restores_graph_lanczos():
    original, lap = graph.lanczos, object()
    cache = {"lap": lap, "steps": 4, "out": "cached"}
    with step_segments.reuse_lanczos(cache):
        assert graph.lanczos(lap, 4) == "cached"
    assert graph.lanczos is original


@pytest.mark.skipif(not (data.FASHION_MNIST_DIR / "train-images-idx3-ubyte.gz").is_file(),
                    reason="Debian's dataset-fashion-mnist is not installed")
def test_each_methods_step_in_segments_at_toy_sizes(monkeypatch, tmp_path, capsys):
    """1,500 rows (the graph cache in tmp_path): each HAGCN row passes the unrolled-forward check and times every
    segment; a deep baseline has no graph, spectrum or filter."""
    monkeypatch.chdir(tmp_path)
    methods = ["gcn", "lanczos", "gcn-batchgraph", "shc"]
    assert step_segments.main(["--methods", *methods, "--n_train", "1500", "--profile_steps", "3"]) == 0
    out = capsys.readouterr().out
    assert "[2] one training step split into segments (median ms over 3 steps)" in out
    rows = {r[0]: r[1:] for r in table_rows(out, "Step segments on cpu")}
    assert list(rows) == methods
    assert all(len(r) == len(step_segments.SEGMENTS) + 2 and float(r[-1]) > 0 for r in rows.values())
    assert all(float(c) >= 0 for m in methods[:3] for c in rows[m])
    assert rows["shc"][1:4] == ["-", "-", "-"]
