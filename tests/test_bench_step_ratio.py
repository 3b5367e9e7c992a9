"""bench/step_ratio.py: train.train against the plain loop, and the speed candidates, each of which runs a real
default HAGCN step, diffusion target included."""
from __future__ import annotations

import re
import sys

import pytest
import torch

import data
from conftest import REPO

sys.path.append(str(REPO / "bench"))  # after the repository: bench/ must not shadow the project's modules

import step_ratio  # noqa: E402

NO_FASHION_MNIST = not (data.FASHION_MNIST_DIR / "train-images-idx3-ubyte.gz").is_file()


def table_rows(out: str, title: str) -> list[list[str]]:
    """The body rows of the table titled `title` in `out`, cells split where bench's tables put two spaces."""
    lines = out[out.index(title):].splitlines()
    rules = [i for i, line in enumerate(lines) if line and set(line) == {"-"}]
    return [re.split(r"\s{2,}", line.strip()) for line in lines[rules[1] + 1:rules[2]]]


@pytest.fixture
def uncompiled(monkeypatch):
    """The compiled candidate runs uncompiled: the same step, without a compile's wait."""
    monkeypatch.setitem(step_ratio.CANDIDATES, "Adam fused + torch.compile", ({"fused": True}, False, False))


@pytest.fixture
def keep_threads():
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def test_speed_candidates_time_the_default_step_with_its_diffusion_coordinates(uncompiled):
    """The default target is the diffusion one, so a candidate's step needs the rows' coordinates (the first GPU run
    of --candidates stopped at 'the diffusion target needs the batch's diffusion coordinates')."""
    gen = torch.Generator().manual_seed(0)
    X, y = torch.randn(300, 20, generator=gen), torch.randint(0, 3, (300,), generator=gen)
    coords = torch.randn(300, 8, generator=gen)
    args = step_ratio.common.project_args(seed=0)
    assert args.sim_target == "diffusion"
    lines = []
    step_ratio.bench_candidates(X, y, coords, 3, args, torch.device("cpu"), 4, [1], lines.append)
    rows = {r[0]: r[1:] for r in table_rows(lines[0], "Speed candidates")}
    assert set(rows) == {step_ratio.PLAIN, *step_ratio.CANDIDATES}
    assert all(float(wall) > 0 and float(ratio) > 0 for _, wall, ratio, *_ in rows.values())
    assert rows[step_ratio.PLAIN][2] == "1.00"  # the plain loop against itself


@pytest.mark.skipif(NO_FASHION_MNIST, reason="Debian's dataset-fashion-mnist is not installed")
def test_section_0_and_the_candidates_at_each_thread_count(uncompiled, keep_threads, monkeypatch, tmp_path, capsys):
    """The script at toy sizes (its graph cache in tmp_path): one round of the ratio, the GFLOP line, and the
    candidates' table with a row per candidate and --threads count."""
    monkeypatch.chdir(tmp_path)
    assert step_ratio.main(["--n_train", "1500", "--ratio_steps", "3", "--ratio_rounds", "1", "--candidates",
                            "--candidate_steps", "3", "--threads", "1", "2"]) == 0
    out = capsys.readouterr().out
    assert "[0] train.train (default HAGCN-gcn, --precision fp32)" in out
    assert len(re.findall(r"round \d/1: train\.train", out)) == 1
    ratio = float(re.search(r"train\.train / plain loop: ([\d.]+) ", out).group(1))
    gflop, plain_gflop = map(float, re.search(r"step: ([\d.]+) GFLOP .*\(plain loop ([\d.]+)\)", out).groups())
    assert ratio > 0 and gflop > plain_gflop > 0  # the same layers, plus the filter's graph product
    rows = table_rows(out, "Speed candidates")
    assert sorted((r[0], r[1]) for r in rows) == sorted((n, t) for n in [step_ratio.PLAIN, *step_ratio.CANDIDATES]
                                                        for t in ("1", "2"))
    assert all(len(r) == 7 and float(r[3]) > 0 for r in rows)
    assert "benchmark wall time" in out
