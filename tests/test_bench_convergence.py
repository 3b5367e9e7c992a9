"""bench/convergence.py and bench/plateau.py at toy sizes: the curves they write are the runs' epochs.csv, the plateau
is the first epoch within the tolerance of a curve's best, and the time ratios are epochs x seconds per epoch."""
from __future__ import annotations

import csv
import sys

import numpy as np
import pytest

from conftest import REPO

sys.path.append(str(REPO / "bench"))  # after the repository: bench/search.py must not shadow search.py

import convergence  # noqa: E402
import plateau  # noqa: E402

TOY = ["--", "--hidden", "16", "--batch_size", "64"]


def read(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_plateau_is_the_first_point_within_the_tolerance_of_the_best():
    assert convergence.plateau(np.array([0.1, 0.5, 0.597, 0.6, 0.599, 0.55]), 0.002) == 3
    assert convergence.plateau(np.array([0.1, 0.5, 0.598, 0.6]), 0.002) == 2
    assert convergence.plateau(np.array([0.3]), 0.002) == 0


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    out = tmp_path_factory.mktemp("validation")
    assert convergence.main_cli(["--dataset", "digits", "--epochs", "4", "--patience", "2", "--out", str(out),
                                 *TOY]) == 0
    return out


def test_the_curves_are_the_runs_validation_scores(study):
    curves = read(study / "convergence_digits.csv")
    runs = read(study / "convergence" / "digits" / "results.csv")
    deep = [r for r in runs if r["method"] not in ("itq",)]
    assert len(deep) == 6 * 2 * 3 and len(runs) == 7 * 2 * 3  # 6 deep lines and ITQ, 2 lengths, 3 folds
    for r in deep:
        name = "hagcn-" + r["task"] if r["method"] == "hagcn" else r["method"]
        got = [(c["epoch"], c["val_map"]) for c in curves
               if (c["method"], c["bits"], c["fold"]) == (name, r["hash_len"], r["fold"])]
        epochs = read(study / "convergence" / "digits" / "runs" / r["run_id"] / "epochs.csv")
        assert got == [(e["epoch"], e["val_map"]) for e in epochs] and 1 <= len(got) <= 4


def test_the_plateau_rows_follow_their_curves(study):
    curves = read(study / "convergence_digits.csv")
    for row in read(study / "convergence_digits_plateau.csv"):
        if row["method"] == "itq":
            assert row["epochs_run"] == "" and 0 < float(row["best_val"]) <= 1
            continue
        val = np.array([float(c["val_map"]) for c in curves
                        if (c["method"], c["bits"], c["fold"]) == (row["method"], row["bits"], row["fold"])])
        assert int(row["plateau_epoch"]) == convergence.plateau(val, 0.002) + 1
        assert float(row["best_val"]) == pytest.approx(val.max(), abs=1e-4)
    assert (study / "figures" / "convergence_digits.png").stat().st_size > 10_000


def test_plateau_times_each_configuration_against_the_reference(study, tmp_path):
    only = ["cosine 1e-3, 20 epochs", "batch 256, cosine 6e-4, 30 epochs"]
    assert plateau.main_cli(["--dataset", "digits", "--bits", "32", "--folds", "3", "--reference",
                             str(study / "convergence" / "digits"), "--time_steps", "3", "--rounds", "2",
                             "--out", str(tmp_path), "--only", *only, *TOY]) == 0
    rows = read(tmp_path / "plateau_digits_32bits.csv")
    assert [r["config"] for r in rows] == ["today (constant 1e-4)", *only] * 3
    for r in rows:
        assert float(r["seconds_per_epoch"]) > 0
        if r["epochs_to_level"]:
            assert float(r["seconds_to_level"]) == pytest.approx(
                int(r["epochs_to_level"]) * float(r["seconds_per_epoch"]), abs=1)
    for r in rows[::3]:  # the reference reaches its own level, at ratio 1
        assert r["epochs_to_level"] and float(r["time_ratio"]) == 1.0
    assert {int(r["epochs"]) for r in rows[1::3]} == {20}
    for r in rows:  # the ratio at a candidate's own last score: its time against the reference's time to that score
        if r["reference_epochs_to_last_val"]:
            ref = rows[rows.index(r) // 3 * 3]
            assert float(r["time_ratio_at_last_val"]) == pytest.approx(
                int(r["epochs"]) * float(r["seconds_per_epoch"])
                / (int(r["reference_epochs_to_last_val"]) * float(ref["seconds_per_epoch"])), rel=1e-2)


def test_matching_epoch_is_the_first_to_reach_the_value():
    epochs, val = np.array([1, 2, 3, 4]), np.array([0.5, 0.7, 0.69, 0.71])
    assert plateau.matching_epoch(epochs, val, 0.7) == 2
    assert plateau.matching_epoch(epochs, val, 0.705) == 4
    assert plateau.matching_epoch(epochs, val, 0.8) is None
