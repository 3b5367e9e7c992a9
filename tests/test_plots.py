"""plots.py on real runs: main.py trains tiny HAGCN (gcn, cheby) and LSH runs on digits that vary the code length,
the filter order K, top-k, tau and the seed; every figure is drawn from the resulting logs and read back (lines,
points, values), and the CLI writes non-empty PNGs."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from conftest import run_cli

import main  # noqa: E402
import plots  # noqa: E402

BASE = ["--method", "hagcn", "--hidden", "32", "--num_epochs", "2", "--batch_size", "128", "--k", "2", "--topk", "50", "--tau", "0.5"]


@pytest.fixture(scope="module")
def logs(tmp_path_factory) -> Path:
    log_dir = tmp_path_factory.mktemp("plots") / "logs"
    grid = ["--method", "hagcn", "lsh", "--task", "gcn", "cheby", "--exp_hash_len", "8", "16"]
    proc = run_cli([*BASE, *grid, "--log_dir", log_dir])  # the CLI as users run it
    assert proc.returncode == 0, proc.stderr
    # the variations, in-process (same code path, no second interpreter start)
    for extra in (["--task", "cheby", "--exp_hash_len", "8", "16", "--k", "3"],                 # fig-k
                  ["--method", "hagcn", "lsh", "--task", "gcn", "cheby", "--exp_hash_len", "16",
                   "--topk", "100"],                                                             # fig-topk
                  ["--task", "gcn", "cheby", "--exp_hash_len", "16", "--tau", "0.4"],            # fig-tau
                  ["--task", "cheby", "--exp_hash_len", "16", "--seed", "1"]):                   # averaging
        assert main.main([*BASE, *extra, "--log_dir", str(log_dir)]) == 0
    return log_dir


@pytest.fixture(scope="module")
def rows(logs) -> list[dict]:
    return plots.load_rows(logs)


def lines_of(fig) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    ax = fig.axes[0]
    return {ln.get_label(): (np.asarray(ln.get_xdata(), float), np.asarray(ln.get_ydata(), float))
            for ln in ax.get_lines() if not ln.get_label().startswith("_")}


def csv_map(rows, **match) -> list[float]:
    return [float(r["map"]) for r in rows if all(r.get(k) == v for k, v in match.items())]


def test_rows_carry_tau_and_settings(rows):
    assert len(rows) == 6 + 2 + 3 + 2 + 1
    assert {r["tau"] for r in rows} == {0.4, 0.5}
    assert {r["k"] for r in rows} == {2, 3}
    assert all(isinstance(r["run_id"], str) and r["hidden"] == 32 for r in rows)  # hidden comes from run.json


def test_map_vs_bits(rows):
    fig = plots.fig_map_vs_bits(rows, "digits")
    got = lines_of(fig)
    assert set(got) == {"HAGCN gcn", "HAGCN cheby", "LSH"}
    for x, y in got.values():
        assert list(x) == [8, 16] and np.all((0 <= y) & (y <= 1))
    # gcn: exactly the CSV value; cheby at 16 bits: the mean of seeds 0 and 1 (K=2, tau 0.5, mAP@50)
    assert got["HAGCN gcn"][1][0] == pytest.approx(csv_map(rows, line="hagcn-gcn", hash_len=8, topk=50)[0])
    cheby16 = csv_map(rows, line="hagcn-cheby", hash_len=16, topk=50, k=2, tau=0.5)
    assert len(cheby16) == 2
    assert got["HAGCN cheby"][1][1] == pytest.approx(np.mean(cheby16))
    assert "mAP@50" in fig.axes[0].get_ylabel()


def test_map_vs_k(rows):
    got = lines_of(plots.fig_map_vs_k(rows, "digits"))
    assert set(got) == {"HAGCN cheby"}  # gcn has no order K
    assert list(got["HAGCN cheby"][0]) == [2, 3]


def test_map_vs_topk(rows):
    got = lines_of(plots.fig_map_vs_topk(rows, "digits"))
    assert set(got) == {"HAGCN gcn", "HAGCN cheby", "LSH"}
    assert all(list(x) == [50, 100] for x, _ in got.values())
    assert got["LSH"][1][1] == pytest.approx(csv_map(rows, method="lsh", hash_len=16, topk=100)[0])


def test_map_vs_tau(rows):
    got = lines_of(plots.fig_map_vs_tau(rows, "digits"))
    assert set(got) == {"HAGCN gcn", "HAGCN cheby"}
    assert all(list(x) == [0.4, 0.5] for x, _ in got.values())


def test_pr_curves(rows, logs):
    fig = plots.fig_pr(rows, logs, "digits")
    got = lines_of(fig)
    assert set(got) == {"HAGCN gcn", "HAGCN cheby", "LSH"}
    for recall, precision in got.values():
        assert len(recall) == 16 + 1  # Hamming radius 0..16 (both lengths tie on methods: 16 is closer to 32)
        assert recall[-1] == pytest.approx(1.0) and np.all(np.diff(recall) >= -1e-12)
    assert len(lines_of(plots.fig_pr(rows, logs, "digits", bits=8))["LSH"][0]) == 9


def test_tsne(rows, logs):
    fig = plots.fig_tsne(logs, rows=rows, dataset="digits", bits=16, n=100)
    ax = fig.axes[0]
    points = sum(len(c.get_offsets()) for c in ax.collections)
    assert points == 100
    assert 2 <= len(ax.collections) <= 10  # one scatter per class present in the sample
    assert getattr(fig, "run_id") in {r["run_id"] for r in rows if r["method"] == "hagcn" and r["hash_len"] == 16}


def test_tie_rules_are_not_mixed(rows):
    """Rows that differ only in --ties measure different things: a figure keeps to one tie rule."""
    stable = [dict(r, ties="index", map=r["map"] / 2) for r in rows if r["method"] == "lsh"]
    chosen, fixed = plots.select(rows + stable, "hash_len")
    assert fixed["ties"] == "expected"
    assert all(r["ties"] == "expected" for rs in chosen.values() for r in rs)


def test_learning_curves_are_the_epochs_csv_of_each_filter(rows, logs):
    """Each panel: the loss terms of epochs.csv, and on its twin axis the validation mAP of the validated epochs."""
    fig = plots.fig_loss_curves(rows, logs, "digits", bits=16)
    panels = [ax for ax in fig.axes if ax.get_visible() and ax.get_title()]
    assert [ax.get_title() for ax in panels] == ["HAGCN gcn", "HAGCN cheby"]  # LSH: no training
    twins = [ax for ax in fig.axes if ax not in panels and ax.get_visible()]
    assert len(twins) == 2
    for ax, twin, (line, run_id) in zip(panels, twins, fig.runs.items()):
        epochs = plots.read_epochs(logs / "runs" / run_id)
        got = {ln.get_label(): ln.get_ydata() for ln in ax.get_lines()}
        assert set(got) == {"reconstruction", "similarity", "total"}
        for name, values in got.items():
            assert np.allclose(values, epochs[name]) and len(values) == 2  # --num_epochs 2
        assert np.allclose(got["total"], got["reconstruction"] + got["similarity"], rtol=1e-4)
        (val,) = twin.get_lines()
        scored = np.isfinite(epochs["val_map"])  # the validated epochs (--val_every), the last among them
        assert scored[-1] and np.allclose(val.get_xdata(), epochs["epoch"][scored])
        assert np.allclose(val.get_ydata(), epochs["val_map"][scored]) and 0 < min(val.get_ydata()) <= 1
    with pytest.raises(plots.Skip, match="no run at 16 bits has an epochs.csv"):
        plots.fig_loss_curves([r for r in rows if r["method"] == "lsh"], logs, "digits", bits=16)


def test_skip_without_variation(rows):
    with pytest.raises(plots.Skip, match="single filter order K"):
        plots.fig_map_vs_k([r for r in rows if r["k"] == 2], "digits")
    with pytest.raises(plots.Skip, match="no runs of dataset"):
        plots.fig_map_vs_bits(rows, "fashion_mnist")


def test_cli_writes_pngs(logs, tmp_path, capsys):
    out = tmp_path / "images"
    assert plots.main(["--log_dir", str(logs), "--out", str(out), "--tsne_n", "80"]) == 0
    names = sorted(p.name for p in out.glob("*.png"))
    assert names == sorted(f"digits_{s}.png" for s in
                           ["map_vs_bits", "map_vs_k", "map_vs_topk", "map_vs_tau", "pr_16bits", "tsne",
                            "losses_16bits"])
    for p in out.glob("*.png"):
        data = p.read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000


def test_cli_bad_input(tmp_path, capsys):
    assert plots.main(["--log_dir", str(tmp_path / "none")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "results.csv" in err[0]


def test_tsne_of_a_multi_label_run_colours_by_the_first_label(tmp_path):
    """codes.npz with (n, C) multi-hot labels: one scatter per first label present, every sampled point drawn."""
    run = tmp_path / "runs" / "abc"
    run.mkdir(parents=True)
    rng = np.random.default_rng(0)
    labels = np.zeros((60, 4), np.uint8)
    labels[np.arange(60), np.arange(60) % 3 + 1] = 1  # first labels 1..3 (none has class 0)
    labels[::4, 0] = 1  # some items also have class 0, which becomes their first label
    np.savez(run / "codes.npz", db_codes=np.packbits(rng.integers(0, 2, (60, 16)), axis=1), n_bits=16,
             db_labels=labels, classes=np.asarray(["a", "b", "c", "d"]))
    fig = plots.fig_tsne(tmp_path, run_id="abc", n=60)
    ax = fig.axes[0]
    assert sum(len(c.get_offsets()) for c in ax.collections) == 60
    assert sorted(c.get_label() for c in ax.collections) == ["a", "b", "c", "d"]
