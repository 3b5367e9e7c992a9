"""The bench/ scripts as a user starts them. `python bench/NAME.py` puts bench/ on sys.path, where bench/search.py
and bench/distributed.py share names with the project's modules: a script must put the repository ahead of its own
folder (bench/graph_target.py once did the opposite, imported bench's distributed.py as the project's and failed in
every configuration). bench/common.py is the training benchmarks' shared module, not a script: it has no usage."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
BENCH = sorted((REPO / "bench").glob("*.py"))
SCRIPTS = [p for p in BENCH if p.stem != "common"]
MODULES = sorted(p.stem for p in REPO.glob("*.py"))

LOADED = """import json, runpy, sys
sys.path[0] = {bench!r}  # what `python bench/NAME.py` puts first
runpy.run_path({script!r}, run_name="imported_by_test")  # module level only: imports and sys.path set-up
print(json.dumps({{m: getattr(sys.modules[m], "__file__", None) for m in {modules!r} if m in sys.modules}}))"""


@pytest.mark.parametrize("script", BENCH, ids=lambda p: p.name)
def test_bench_script_imports_the_projects_modules(script):
    code = LOADED.format(bench=str(script.parent), script=str(script), modules=MODULES)
    run = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    loaded = json.loads(run.stdout.strip().splitlines()[-1])
    assert {m: f for m, f in loaded.items() if Path(f).parent != REPO} == {}


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_bench_script_prints_its_usage(script):
    run = subprocess.run([sys.executable, str(script), "--help"], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert "usage:" in run.stdout


def test_distributed_bench_gives_one_row_per_seed(tmp_path):
    """bench/distributed.py --seeds: each seed trains its own run (the README's mAP-cost table compares them)."""
    run = subprocess.run([sys.executable, str(REPO / "bench" / "distributed.py"), "--dataset", "digits", "--subsample",
                          "300", "--num_epochs", "2", "--bits", "8", "--hidden", "16", "--seeds", "0", "1",
                          "--nproc", "1", "--log_dir", str(tmp_path)], cwd=REPO, capture_output=True, text=True,
                         timeout=300)
    assert run.returncode == 0, run.stderr
    rows = [line.split() for line in run.stdout.splitlines()[2:]]
    assert [(r[0], r[1]) for r in rows] == [("0", "1"), ("1", "1")]
    assert rows[0][6] != rows[1][6]  # the mAP column: another seed, another model
    assert {r[7] for r in rows} == {"+0.0000"}  # a one-process run is its own baseline
