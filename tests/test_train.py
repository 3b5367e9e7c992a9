"""train.py: degenerate data trains without NaN for every filter, divergence stops the run naming epoch, step and
filter (and main.py exits 1 without a result row), checkpoints are atomic, and resuming from a checkpoint gives the
same model bit for bit as an uninterrupted run."""
from __future__ import annotations

from functools import partial

import pytest
import torch

import main
import train as train_mod
from graph import FILTERS
from losses import hagcn_loss, total
from results import OutputError
from model import HAGCN
from train import TrainingDiverged, encode, epoch_batches, rank_share, train

LOSS = partial(hagcn_loss, lambda_=1.0)


def model_for(task: str, d_in: int = 6, seed: int = 0) -> HAGCN:
    torch.manual_seed(seed)
    return HAGCN(d_in, 16, 8, task, 3, 2)


def degenerate_sets() -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    gen = torch.Generator().manual_seed(0)
    far = torch.cat([torch.randn(8, 6, generator=gen) + 30, torch.randn(9, 6, generator=gen) - 30])
    return {
        "identical": (torch.ones(20, 6), torch.zeros(20, dtype=torch.long)),
        "last_batch_of_one": (torch.randn(17, 6, generator=gen), torch.arange(17) % 3),
        "two_items": (torch.randn(2, 6, generator=gen), torch.tensor([0, 1])),
        "class_with_one_item": (torch.randn(12, 6, generator=gen), torch.tensor([0] * 11 + [1])),
        "disconnected": (far, torch.tensor([0] * 8 + [1] * 9)),
    }


@pytest.mark.parametrize("name", list(degenerate_sets()))
@pytest.mark.parametrize("task", list(FILTERS))
def test_degenerate_data_trains_without_nan(task, name):
    X, y = degenerate_sets()[name]
    model = model_for(task)
    train(model, LOSS, X, y, num_epochs=2, batch_size=8, lr=1e-3, seed=0, desc=task)
    assert all(torch.isfinite(p).all() for p in model.parameters())
    assert encode(model, X).shape == (len(X), 8)


def nan_at_step(step: int):
    """A loss that is the real one until the `step`-th call (1-based), then NaN."""
    calls = {"n": 0}

    def loss_fn(out, x, y):
        calls["n"] += 1
        loss = total(LOSS(out, x, y))
        return loss * float("nan") if calls["n"] == step else loss
    return loss_fn


def test_nan_loss_stops_naming_epoch_step_and_filter(tmp_path):
    X, y = torch.randn(40, 6), torch.zeros(40, dtype=torch.long)
    with pytest.raises(TrainingDiverged, match=r"hagcn-cheby 8 bits.*nan at epoch 2, step 1"):
        train(model_for("cheby"), nan_at_step(6), X, y, num_epochs=3, batch_size=8, lr=1e-3, seed=0,
              desc="hagcn-cheby 8 bits fold 0", checkpoint=tmp_path / "checkpoint.pt")
    # the last good epoch's checkpoint is intact (epoch index 0) and nothing half-written is left
    assert torch.load(tmp_path / "checkpoint.pt", weights_only=False)["epoch"] == 0
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint.pt"]


def test_parameters_turning_nan_on_the_last_step_are_caught():
    X, y = torch.randn(16, 6), torch.zeros(16, dtype=torch.long)
    model = model_for("gcn")

    def poison(out, x, y):  # finite loss whose gradient is NaN (0 * d sqrt(z)/dz at z = 0): the step poisons the model
        return total(LOSS(out, x, y)) + 0 * torch.sqrt(0 * out["probs"].sum())
    with pytest.raises(TrainingDiverged, match="hagcn-gcn: parameters became NaN or Inf at epoch 1, step 1"):
        train(model, poison, X, y, num_epochs=2, batch_size=16, lr=1e-3, seed=0, desc="hagcn-gcn")


@pytest.mark.parametrize("lr", ["nan_at_step_3", "1e30"])
def test_main_exits_1_on_divergence_without_a_result_row(tmp_path, monkeypatch, capsys, lr):
    argv = ["--method", "hagcn", "--task", "gcn", "--exp_hash_len", "8", "--num_epochs", "2", "--hidden", "32",
            "--subsample", "300", "--batch_size", "32", "--log_dir", str(tmp_path)]
    if lr == "1e30":
        argv += ["--lr", "1e30"]
    else:
        calls = {"n": 0}

        def loss(out, x, y, **kw):
            calls["n"] += 1
            value = total(hagcn_loss(out, x, y, **kw))
            return value * float("nan") if calls["n"] == 3 else value
        monkeypatch.setattr(main, "hagcn_loss", loss)
    assert main.main(argv) == 1
    err = capsys.readouterr().err
    assert "error: hagcn-gcn 8 bits fold 0" in err and "epoch 1, step" in err and "no result row" in err
    if lr != "1e30":
        assert "epoch 1, step 3" in err
    assert not (tmp_path / "results.csv").exists()


def test_checkpoint_write_is_atomic(tmp_path, monkeypatch):
    path = tmp_path / "checkpoint.pt"
    train_mod.atomic_save({"epoch": 1}, path)

    def torn_save(obj, f):
        f.write(b"half a checkpo")
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(torch, "save", torn_save)
    with pytest.raises(OutputError, match=r"checkpoint\.pt: cannot write \(No space left on device\)"):
        train_mod.atomic_save({"epoch": 2}, path)
    monkeypatch.undo()
    assert torch.load(path, weights_only=False) == {"epoch": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint.pt"]  # the torn temporary file is removed


class Interrupt(Exception):
    pass


@pytest.mark.parametrize("task", ["spline", "lanczos"])
def test_resume_equals_an_uninterrupted_run_bit_for_bit(tmp_path, task):
    X, y = torch.randn(50, 6, generator=torch.Generator().manual_seed(3)), torch.zeros(50, dtype=torch.long)
    kw = dict(num_epochs=5, batch_size=16, lr=1e-2, seed=7, desc=task)
    full = model_for(task)
    train(full, LOSS, X, y, checkpoint=tmp_path / "full.pt", **kw)

    calls = {"n": 0}

    def crash_in_epoch_3(out, x, y):
        calls["n"] += 1
        if calls["n"] == 2 * 4 + 2:  # 4 batches per epoch: second step of the third epoch
            raise Interrupt
        return LOSS(out, x, y)
    with pytest.raises(Interrupt):
        train(model_for(task), crash_in_epoch_3, X, y, checkpoint=tmp_path / "cut.pt", **kw)
    assert torch.load(tmp_path / "cut.pt", weights_only=False)["epoch"] == 1
    torch.manual_seed(123)  # a new process: the global RNG is wherever it is
    resumed = model_for(task, seed=99)
    train(resumed, LOSS, X, y, checkpoint=tmp_path / "cut.pt", resume=True, **kw)
    for (name, a), (_, b) in zip(full.state_dict().items(), resumed.state_dict().items()):
        assert torch.equal(a, b), name
    assert (encode(full, X) == encode(resumed, X)).all()
    assert torch.load(tmp_path / "cut.pt", weights_only=False)["epoch"] == 4


# ----------------------------------------------------------------------------- neighbourhood batches

def test_shuffled_batches_partition_the_rows():
    batches = epoch_batches(37, 8, torch.Generator().manual_seed(0))
    assert [len(b) for b in batches] == [8, 8, 8, 8, 5]
    assert sorted(torch.cat(batches).tolist()) == list(range(37))


def test_neighbourhood_batches_hold_anchors_with_their_neighbours():
    n, pool, group, batch = 300, 6, 4, 32
    gen = torch.Generator().manual_seed(0)
    neighbours = torch.stack([torch.randperm(n, generator=gen)[:pool] for _ in range(n)])
    batches = epoch_batches(n, batch, torch.Generator().manual_seed(1), neighbours, group)
    assert len(batches) == -(-n // batch)                     # as many steps as a shuffled epoch
    assert all(len(b) == batch for b in batches)
    groups = torch.cat(batches).view(-1, group)
    anchors = groups[:, 0]
    assert len(set(anchors.tolist())) == len(anchors)         # anchors drawn without replacement
    for row in groups:                                        # every mate is one of its anchor's neighbours
        assert set(row[1:].tolist()) <= set(neighbours[row[0]].tolist())
    again = epoch_batches(n, batch, torch.Generator().manual_seed(1), neighbours, group)
    assert all(torch.equal(a, b) for a, b in zip(batches, again))  # same generator state, same batches


def test_neighbourhood_batches_give_the_batch_graph_true_neighbours():
    """On real data (digits), a neighbourhood batch's k-NN graph links items of the same class far more often than a
    shuffled batch's: the point of --batch_group."""
    from sklearn.datasets import load_digits

    from graph import batch_graph, knn_graph
    X, y = (torch.from_numpy(a) for a in load_digits(return_X_y=True))
    X = X.float()
    gen = torch.Generator().manual_seed(0)

    def same_class_edges(batches):
        hits = total = 0
        for idx in batches[:-1]:
            adj = (batch_graph(X[idx], 10).a_hat > 0).float() - torch.eye(len(idx))
            same = (y[idx][:, None] == y[idx][None, :]).float()
            hits, total = hits + float((adj * same).sum()), total + float(adj.sum())
        return hits / total

    shuffled = same_class_edges(epoch_batches(len(X), 64, gen))
    grouped = same_class_edges(epoch_batches(len(X), 64, gen, torch.from_numpy(knn_graph(X.numpy(), 20)), 8))
    assert grouped > shuffled + 0.03, (shuffled, grouped)


@pytest.mark.parametrize("world", [1, 2, 4])
def test_rank_shares_partition_a_neighbourhood_batch_into_whole_groups(world):
    """Under torchrun each rank trains on a contiguous run of whole groups of the global batch, the same number
    each: together the ranks' shares are the global batch, in order."""
    n, group = 300, 4
    neighbours = torch.stack([torch.randperm(n, generator=torch.Generator().manual_seed(i))[:6] for i in range(n)])
    for batch in epoch_batches(n, 32, torch.Generator().manual_seed(1), neighbours, group):
        shares = [rank_share(batch, group, rank, world) for rank in range(world)]
        assert [len(s) for s in shares] == [32 // world] * world
        assert torch.equal(torch.cat(shares), batch)          # whole groups: each share is a multiple of 4 rows


@pytest.mark.parametrize("rows, shares", [(5, [[0, 1, 2], [3, 4, 0]]), (1, [[0], [0]])])
def test_a_short_last_batch_is_padded_with_its_own_rows_into_equal_shares(rows, shares):
    batch = torch.arange(rows)
    assert [rank_share(batch, 1, rank, 2).tolist() for rank in range(2)] == shares


# ----------------------------------------------------------------------------- loss history (epochs.csv, TensorBoard)

def recording(log: list):
    """LOSS, also appending each step's terms (floats) to `log`."""
    def loss_fn(out, x, y):
        terms = LOSS(out, x, y)
        log.append({k: float(v.detach()) for k, v in terms.items()})
        return terms
    return loss_fn


def test_epochs_csv_holds_each_terms_epoch_mean_and_resume_continues_it(tmp_path):
    X, y = torch.randn(48, 6, generator=torch.Generator().manual_seed(4)), torch.zeros(48, dtype=torch.long)
    kw = dict(num_epochs=4, batch_size=16, lr=1e-2, seed=2, desc="gcn")
    steps: list[dict] = []
    train(model_for("gcn"), recording(steps), X, y, checkpoint=tmp_path / "full.pt",
          history=tmp_path / "full.csv", **kw)
    rows = train_mod.read_epochs(tmp_path / "full.csv")
    assert list(rows[0]) == ["epoch", "reconstruction", "similarity", "total", "seconds", "lr", "val_map",
                             "val_seconds"]
    assert {r["val_map"] for r in rows} == {""}  # no validation
    assert [r["epoch"] for r in rows] == ["1", "2", "3", "4"]
    for e, r in enumerate(rows):  # 3 steps per epoch
        for name in ("reconstruction", "similarity"):
            mean = sum(s[name] for s in steps[3 * e:3 * e + 3]) / 3
            assert float(r[name]) == pytest.approx(mean, rel=1e-5)
        assert float(r["total"]) == pytest.approx(float(r["reconstruction"]) + float(r["similarity"]), rel=1e-5)
        assert float(r["seconds"]) > 0
    assert float(rows[-1]["total"]) < float(rows[0]["total"])

    calls = {"n": 0}

    def crash_in_epoch_3(out, x, y):
        calls["n"] += 1
        if calls["n"] == 2 * 3 + 2:
            raise Interrupt
        return LOSS(out, x, y)
    with pytest.raises(Interrupt):
        train(model_for("gcn"), crash_in_epoch_3, X, y, checkpoint=tmp_path / "cut.pt", history=tmp_path / "cut.csv",
              **kw)
    assert len(train_mod.read_epochs(tmp_path / "cut.csv")) == 2
    train(model_for("gcn"), LOSS, X, y, checkpoint=tmp_path / "cut.pt", history=tmp_path / "cut.csv", resume=True, **kw)
    drop = lambda rs: [{k: v for k, v in r.items() if k != "seconds"} for r in rs]
    assert drop(train_mod.read_epochs(tmp_path / "cut.csv")) == drop(rows)
    assert not list(tmp_path.glob(".*tmp*"))


def test_a_scalar_loss_is_one_term():
    X, y = torch.randn(16, 6), torch.zeros(16, dtype=torch.long)
    train(model_for("gcn"), lambda o, x, y: total(LOSS(o, x, y)), X, y, num_epochs=1, batch_size=8, lr=1e-3, seed=0,
          desc="gcn")
    assert train_mod.as_terms(torch.tensor(1.0)).keys() == {"loss"}


def test_tensorboard_flag_without_the_package_is_one_line(tmp_path, monkeypatch):
    import importlib.util

    from arguments import ArgError, parse_args
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "tensorboard" else real(name, *a))
    with pytest.raises(ArgError, match=r"^--tensorboard: the tensorboard package is not installed"):
        parse_args(["--tensorboard", "--log_dir", str(tmp_path / "logs")])


def test_tensorboard_gets_the_epochs_csv_values(tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    X, y = torch.randn(32, 6), torch.zeros(32, dtype=torch.long)
    train(model_for("gcn"), LOSS, X, y, num_epochs=2, batch_size=16, lr=1e-3, seed=0, desc="gcn",
          history=tmp_path / "epochs.csv", tensorboard=True)
    events = EventAccumulator(str(tmp_path / "tensorboard"))
    events.Reload()
    rows = train_mod.read_epochs(tmp_path / "epochs.csv")
    for name in ("reconstruction", "similarity", "total"):
        got = events.Scalars(f"loss/{name}")
        assert [e.step for e in got] == [1, 2]
        assert [e.value for e in got] == pytest.approx([float(r[name]) for r in rows], rel=1e-4)


# ----------------------------------------------------------------------------- validation, epoch selection, schedule

def scripted(curve: list[float], snapshots: list | None = None):
    """A validation score that returns curve[i] at its i-th call (and keeps a copy of the weights it was called on)."""
    calls = {"n": 0}

    def score(model):
        if snapshots is not None:
            snapshots.append({k: v.clone() for k, v in model.state_dict().items()})
        calls["n"] += 1
        return curve[calls["n"] - 1]
    return score


VAL_KW = dict(batch_size=16, lr=1e-2, seed=5, desc="gcn")


def val_data():
    return torch.randn(48, 6, generator=torch.Generator().manual_seed(8)), torch.zeros(48, dtype=torch.long)


@pytest.mark.parametrize("every, patience, curve, stop, best", [
    (1, 3, [0.1, 0.3, 0.2, 0.25, 0.3, 0.9, 0.9], 5, 2),    # epochs 3, 4 and 5 bring nothing better than epoch 2
    (2, 2, [0.1, 0.4, 0.5, 0.45, 0.45, 0.9], 10, 6),       # validated at epochs 2, 4, ...: stale at 8 and 10
    (1, 0, [0.1, 0.2, 0.1, 0.0, 0.0, 0.0], 6, 2),          # no early stop: every epoch runs
])
def test_early_stopping_stops_where_the_scripted_curve_says(every, patience, curve, stop, best, tmp_path):
    X, y = val_data()
    result = train(model_for("gcn"), LOSS, X, y, num_epochs=12 if every == 2 else 6, history=tmp_path / "e.csv",
                   validation=train_mod.Validation(scripted(curve), every, "best_val", patience), **VAL_KW)
    assert (result.epochs, result.kept_epoch, result.val_map) == (stop, best, max(curve[:stop // every]))
    rows = train_mod.read_epochs(tmp_path / "e.csv")
    assert len(rows) == stop
    assert [float(r["val_map"]) for r in rows if r["val_map"]] == curve[:stop // every]
    assert all(bool(r["val_map"]) == (int(r["epoch"]) % every == 0) for r in rows)


def test_best_val_restores_the_best_epochs_weights_and_last_keeps_the_last(tmp_path):
    X, y = val_data()
    snapshots: list[dict] = []
    best = model_for("gcn")
    train(best, LOSS, X, y, num_epochs=5, checkpoint=tmp_path / "checkpoint.pt",
          validation=train_mod.Validation(scripted([0.2, 0.6, 0.4, 0.5, 0.1], snapshots), select="best_val"), **VAL_KW)
    for name, value in best.state_dict().items():
        assert torch.equal(value, snapshots[1][name]), name  # epoch 2's weights, its alpha included
    assert (encode(best, X) == (best.hash_logits(X) > best.code_threshold()).numpy()).all()
    assert set(torch.load(tmp_path / "best.pt", weights_only=True)) == set(snapshots[1])
    last = model_for("gcn")
    result = train(last, LOSS, X, y, num_epochs=5,
                   validation=train_mod.Validation(scripted([0.2, 0.6, 0.4, 0.5, 0.1]), select="last"), **VAL_KW)
    assert (result.kept_epoch, result.val_map) == (5, 0.1)
    assert all(torch.equal(a, b) for a, b in zip(last.state_dict().values(), snapshots[-1].values()))


def test_validation_changes_nothing_in_training(tmp_path):
    """Scoring switches the model to eval mode and back and encodes rows: the weights are the same without it."""
    X, y = val_data()
    plain, scored = model_for("gcn"), model_for("gcn")
    train(plain, LOSS, X, y, num_epochs=3, **VAL_KW)
    train(scored, LOSS, X, y, num_epochs=3, validation=train_mod.Validation(lambda m: float(encode(m, X).mean())),
          **VAL_KW)
    assert all(torch.equal(a, b) for a, b in zip(plain.state_dict().values(), scored.state_dict().values()))


def test_resume_after_an_interrupted_early_stopped_run_gives_its_codes(tmp_path):
    """Cut in the middle, resumed: the same stop, the same kept epoch, the same weights; resumed again after it
    stopped (the checkpoint says so), it trains no further epoch."""
    X, y = val_data()
    curve = [0.1, 0.5, 0.3, 0.6, 0.2, 0.3, 0.4, 0.9, 0.9]
    kw = dict(num_epochs=9, **VAL_KW)
    full = model_for("gcn")
    ref = train(full, LOSS, X, y, checkpoint=tmp_path / "full.pt",
                validation=train_mod.Validation(scripted(curve), select="best_val", patience=3), **kw)
    assert (ref.epochs, ref.kept_epoch) == (7, 4)
    calls = {"n": 0}

    def crash_in_epoch_5(out, x, y):
        calls["n"] += 1
        if calls["n"] == 4 * 3 + 2:
            raise Interrupt
        return LOSS(out, x, y)
    cut_dir = tmp_path / "cut"
    cut_dir.mkdir()
    with pytest.raises(Interrupt):
        train(model_for("gcn"), crash_in_epoch_5, X, y, checkpoint=cut_dir / "checkpoint.pt",
              validation=train_mod.Validation(scripted(curve), select="best_val", patience=3), **kw)
    resumed = model_for("gcn", seed=42)
    got = train(resumed, LOSS, X, y, checkpoint=cut_dir / "checkpoint.pt", resume=True,
                validation=train_mod.Validation(scripted(curve[4:]), select="best_val", patience=3), **kw)
    assert got == ref._replace(seconds=got.seconds)
    assert all(torch.equal(a, b) for a, b in zip(full.state_dict().values(), resumed.state_dict().values()))
    again = model_for("gcn", seed=43)
    after = train(again, LOSS, X, y, checkpoint=cut_dir / "checkpoint.pt", resume=True,
                  validation=train_mod.Validation(scripted([]), select="best_val", patience=3), **kw)
    assert (after.epochs, after.kept_epoch) == (7, 4)
    assert all(torch.equal(a, b) for a, b in zip(full.state_dict().values(), again.state_dict().values()))


def test_cosine_schedule_warms_up_then_decays_to_zero():
    rates = [train_mod.learning_rate(1.0, "cosine", s, 100, 10) for s in range(100)]
    assert rates[:10] == pytest.approx([(s + 1) / 10 for s in range(10)])
    assert rates[10] == 1.0 and all(a >= b for a, b in zip(rates[10:], rates[11:]))
    assert train_mod.learning_rate(1.0, "cosine", 100, 100, 10) == pytest.approx(0.0)
    assert train_mod.learning_rate(1.0, "cosine", 55, 100, 10) == pytest.approx(0.5)
    assert {train_mod.learning_rate(0.3, "constant", s, 100, 10) for s in range(100)} == {0.3}


def test_epochs_csv_records_the_rate_each_epoch_ended_with(tmp_path):
    X, y = val_data()
    train(model_for("gcn"), LOSS, X, y, num_epochs=4, history=tmp_path / "e.csv", lr_schedule="cosine",
          warmup_epochs=1, **{**VAL_KW, "lr": 1e-3})
    rates = [float(r["lr"]) for r in train_mod.read_epochs(tmp_path / "e.csv")]  # 3 steps an epoch, 12 in all
    assert rates == pytest.approx([1e-3, *(train_mod.learning_rate(1e-3, "cosine", s, 12, 3) for s in (5, 8, 11))],
                                  rel=1e-5)
