"""bench/epoch_times.py: seconds per epoch with train.train (section 1) and the cost of data loading (section 3)."""
from __future__ import annotations

import re
import sys

import pytest

import data
from conftest import REPO

sys.path.append(str(REPO / "bench"))  # after the repository: bench/ must not shadow the project's modules

import epoch_times  # noqa: E402


def table_rows(out: str, title: str) -> list[list[str]]:
    """The body rows of the table titled `title` in `out`, cells split where bench's tables put two spaces."""
    lines = out[out.index(title):].splitlines()
    rules = [i for i, line in enumerate(lines) if line and set(line) == {"-"}]
    return [re.split(r"\s{2,}", line.strip()) for line in lines[rules[1] + 1:rules[2]]]


@pytest.mark.skipif(not (data.FASHION_MNIST_DIR / "train-images-idx3-ubyte.gz").is_file(),
                    reason="Debian's dataset-fashion-mnist is not installed")
def test_an_epoch_per_method_and_the_data_loading_at_toy_sizes(monkeypatch, tmp_path, capsys):
    """Both sections on 1,500 rows (the graph cache in tmp_path): a row per method, extrapolated to the 12 steps of
    an epoch, gcn's ratio to itself 1.00x, and section 3 set against gcn's step."""
    monkeypatch.chdir(tmp_path)
    assert epoch_times.main(["--methods", "gcn", "dsh", "--n_train", "1500", "--steps", "3", "--reps", "2"]) == 0
    out = capsys.readouterr().out
    assert "[1] seconds per epoch with train.train (3 steps x 2 rounds, extrapolated)" in out
    assert len(re.findall(r"round \d/2: gcn [\d.]+s  dsh [\d.]+s", out)) == 2
    rows = {r[0]: r for r in table_rows(out, "Seconds per epoch (12 steps of 128) on cpu")}
    assert list(rows) == ["gcn", "dsh"]
    assert [rows["gcn"][1], rows["dsh"][1]] == ["HAGCN", "deep baseline"]
    assert all(len(r) == 7 and 0 < float(r[3]) <= float(r[2]) <= float(r[4]) for r in rows.values())  # min, med, max
    assert rows["gcn"][6] == "1.00x" and float(rows["dsh"][6].rstrip("x")) > 0
    assert "target (every filter within 1.5x of gcn): met" in out
    loading = re.search(r"\[3\] data loading on cpu: .* (\d+) us median \(([\d.]+)% of a gcn step of ([\d.]+) ms\); "
                        r".*\((\d+) batches\)", out)
    assert loading and float(loading.group(3)) == float(rows["gcn"][5])  # section 1's ms/step
    assert int(loading.group(4)) == 12
