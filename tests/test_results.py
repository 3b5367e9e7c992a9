"""results.py: appending to results.csv keeps every row and column and leaves no temporary file, the grid skip finds
finished runs (and --force ignores them), and the text and Markdown tables show mean ± std with best and ties."""
from __future__ import annotations

import json

import numpy as np
import pytest

import results
from results import ResultsLog, append_result, best_and_ties, format_table, markdown_table, read_results


def row(method: str, bits: int, map_: float, fold: int = 0, task: str = "-", supervised: bool = False) -> dict:
    return {"method": method, "task": task, "hash_len": str(bits), "map": f"{map_:.6f}", "fold": str(fold),
            "supervised": str(supervised), "run_id": f"{method}{task}{bits}f{fold}"}


def test_append_keeps_rows_and_new_columns_atomically(tmp_path):
    path = tmp_path / "results.csv"
    append_result(path, {"run_id": "a", "map": "0.5"})
    append_result(path, {"run_id": "b", "map": "0.6", "extra": "x"})
    rows = read_results(path)
    assert [r["run_id"] for r in rows] == ["a", "b"]
    assert rows[0]["extra"] == "" and rows[1]["extra"] == "x"
    assert list(rows[0])[:len(results.CSV_COLUMNS)] == results.CSV_COLUMNS
    assert [p.name for p in tmp_path.iterdir()] == ["results.csv"]
    assert read_results(tmp_path / "missing.csv") == []


def test_run_ids_ignore_only_evaluation_settings():
    s = {"method": "hagcn", "hash_len": 16, "topk": 200, "metric": "label"}
    assert results.run_id_of(s) != results.run_id_of({**s, "topk": 0})
    assert results.train_id_of(s) == results.train_id_of({**s, "topk": 0, "metric": "paper_repo"})
    assert results.train_id_of(s) != results.train_id_of({**s, "hash_len": 32})


def test_log_skips_finished_runs_and_finds_reusable_codes(tmp_path):
    settings = {"method": "lsh", "hash_len": 8, "topk": 200}
    run_id, train_id = results.run_id_of(settings), results.train_id_of(settings)
    log = ResultsLog(tmp_path, {"args": {"seed": 1}})
    assert json.loads((tmp_path / "last_args.json").read_text()) == {"args": {"seed": 1}}
    assert log.finished(run_id, force=False) is None
    run_dir = tmp_path / "runs" / run_id
    run_dir.mkdir(parents=True)
    r = {"run_id": run_id, "map": "0.5"}
    log.add(r, train_id, run_dir, {"settings": settings}, lambda: np.savez(run_dir / "codes.npz", a=1))
    again = ResultsLog(tmp_path, {})  # a new process reads the same folder
    assert again.finished(run_id, force=False)["map"] == "0.5"
    assert again.finished(run_id, force=True) is None
    assert again.trained_in(train_id, force=False) == run_dir and again.trained_in(train_id, force=True) is None
    assert json.loads((run_dir / "run.json").read_text()) == {"settings": settings}
    (run_dir / "codes.npz").unlink()  # without codes a run cannot lend them
    assert ResultsLog(tmp_path, {}).trained_in(train_id, force=False) is None


GRID = [row("hagcn", 16, 0.80, 0, "gcn"), row("hagcn", 16, 0.84, 1, "gcn"), row("hagcn", 32, 0.90, 0, "gcn"),
        row("hagcn", 32, 0.90, 1, "gcn"),
        row("itq", 16, 0.81, 0), row("itq", 16, 0.83, 1), row("itq", 32, 0.70, 0), row("itq", 32, 0.72, 1),
        row("dsh", 16, 0.50, 0, supervised=True), row("dsh", 16, 0.50, 1, supervised=True)]


def test_text_table_mean_and_std_over_folds():
    lines = format_table(GRID, [16, 32], "title").splitlines()
    assert lines[0] == "title" and lines[1].split() == ["method", "labels", "16", "32"]
    assert lines[3].split() == ["hagcn-gcn", "no", "0.8200\u00b10.0200", "0.9000\u00b10.0000"]
    assert lines[5].split() == ["dsh", "yes", "0.5000\u00b10.0000", "-"]


def test_best_and_ties_use_the_spread():
    best, ties = best_and_ties({"a": [0.80, 0.84], "b": [0.81, 0.83], "c": [0.70, 0.72], "d": []})
    assert best == {"a", "b"} and ties == set()  # equal means: both best
    best, ties = best_and_ties({"a": [0.80, 0.84], "b": [0.79, 0.83], "c": [0.70, 0.72]})
    assert best == {"a"} and ties == {"b"}  # 0.01 below, spread 0.02: a tie; c is 0.11 below
    best, ties = best_and_ties({"a": [0.82], "b": [0.81]})
    assert best == {"a"} and ties == set()  # one fold: no spread, no tie


def test_markdown_table_cells_marks_and_commit():
    md = markdown_table(GRID, [16, 32], title="digits", commit="abc1234")
    lines = md.splitlines()
    assert lines[0] == "**digits**"
    assert lines[2] == "| method | labels | 16 bits | 32 bits |"
    assert lines[4] == "| hagcn-gcn | no | **0.8200 ± 0.0200** | **0.9000 ± 0.0000** |"
    assert lines[5] == "| itq | no | **0.8200 ± 0.0100** | 0.7100 ± 0.0100 |"
    assert lines[6] == "| dsh | yes | 0.5000 ± 0.0000 | - |"
    assert "over 2 fold(s)" in lines[-1] and "`abc1234`" in lines[-1]
    tied = markdown_table(GRID[:4] + [row("itq", 16, 0.80, 0), row("itq", 16, 0.82, 1)], [16])
    assert "| itq | no | 0.8100 ± 0.0100 † |" in tied


@pytest.mark.parametrize("value", ["True", True])
def test_supervised_column_reads_csv_text_and_bools(value):
    r = {**row("shc", 8, 0.5), "supervised": value}
    assert "| shc | yes | **0.5000** |" in markdown_table([r], [8])


def test_a_partial_grids_cells_say_how_many_folds_they_hold():
    rows = [row("itq", 16, 0.8, 0), row("itq", 16, 0.82, 1), row("itq", 32, 0.7, 0), row("lsh", 16, 0.5, 0)]
    md = markdown_table(rows, [16, 32], folds=2)
    assert "| itq | no | **0.8100 ± 0.0100** | **0.7000** (1 of 2 folds) |" in md
    assert "| lsh | no | 0.5000 (1 of 2 folds) | - |" in md
    assert "of 2 folds" not in markdown_table(rows, [16, 32])  # without the grid's folds: no marks


def test_atomic_write_on_a_full_disk_names_the_file_and_leaves_nothing(tmp_path):
    path = tmp_path / "table.md"
    path.write_text("old")

    def full(tmp):
        tmp.write_text("half")
        raise OSError(28, "No space left on device")
    with pytest.raises(results.OutputError, match=r"table\.md: cannot write \(No space left on device\)$"):
        results.atomic_write(path, full)
    assert path.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["table.md"]
