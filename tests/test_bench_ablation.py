"""bench/ablation.py at toy sizes: one row per variant, each a run with exactly its flags changed."""
from __future__ import annotations

import csv
import json
import sys

from conftest import REPO

sys.path.append(str(REPO / "bench"))  # after the repository: bench/search.py must not shadow search.py

import ablation  # noqa: E402


def test_one_row_per_variant_with_its_flags(tmp_path):
    assert ablation.main_cli(["--dataset", "digits", "--folds", "2", "--bits", "8", "--out", str(tmp_path),
                              "--", "--hidden", "16", "--num_epochs", "2"]) == 0
    log_dir = tmp_path / "ablation_digits"
    table = (log_dir / "table.md").read_text()
    for name in ablation.VARIANTS:
        assert f"| {name} | no | " in table
    assert "± " in table  # two folds: mean ± std
    with open(log_dir / "results.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 2 * len(ablation.VARIANTS)
    settings = [json.loads((log_dir / "runs" / r["run_id"] / "run.json").read_text())["settings"] for r in rows]
    default = settings[0]
    changed = [{k for k in s if s[k] != default[k]} - {"fold"} for s in settings[::2]]
    assert changed == [set(), {"task"}, {"recon_weight"}, {"graph_edges", "sim_target"}, {"batch_group"},
                       {"hash_head"}]
