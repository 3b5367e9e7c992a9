"""model.py (HAGCN): inductive codes (an item's code never depends on its batch), the documented alpha schedule,
the bit rule b = sign(P - tau), and the forward pass of every filter and hash head."""
from __future__ import annotations

import math

import pytest
import torch

from graph import FILTERS
from model import HAGCN
from train import encode


def make_model(task: str = "gcn", hash_head: str = "mlp", **kw) -> HAGCN:
    torch.manual_seed(0)
    return HAGCN(d_in=12, hidden=16, n_bits=10, task=task, order=3, knn=3, hash_head=hash_head, **kw)


@pytest.mark.parametrize("hash_head", ["linear", "mlp"])
@pytest.mark.parametrize("task", list(FILTERS))
def test_codes_are_inductive(task, hash_head):
    """The same items, encoded inside two different batches and with several batch sizes, get the same bits."""
    model = make_model(task, hash_head)
    model.train()  # even in training mode, codes use no batch statistics and no graph
    x = torch.randn(40, 12, generator=torch.Generator().manual_seed(1))
    other = torch.randn(40, 12, generator=torch.Generator().manual_seed(2))
    alone = model.codes(x[:5])
    mixed = model.codes(torch.cat([other[:17], x[:5], other[17:]]))[17:22]
    assert torch.equal(alone, mixed)
    one_by_one = torch.cat([model.codes(x[i:i + 1]) for i in range(40)])
    for batch_size in (1, 3, 7, 40, 4096):
        assert (encode(model, x, batch_size=batch_size) == one_by_one.numpy()).all()


def test_codes_are_the_sign_of_p_minus_tau():
    for tau in (0.3, 0.5, 0.8):
        model = make_model(tau=tau)
        model.set_epoch(3, 10)
        x = torch.randn(64, 12)
        probs = model(x)["probs"]
        assert torch.equal(model.codes(x), probs > tau)


def test_alpha_schedule_is_geometric_and_monotone():
    """Documented in HAGCN's docstring: alpha grows geometrically from `alpha` (first epoch) to `alpha_max` (last)."""
    assert "alpha grows" in HAGCN.__doc__
    model = make_model(alpha=0.5, alpha_max=8.0)
    values = []
    for epoch in range(9):
        model.set_epoch(epoch, 9)
        values.append(float(model.alpha))
    assert values[0] == pytest.approx(0.5) and values[-1] == pytest.approx(8.0)
    assert all(b > a for a, b in zip(values, values[1:]))
    ratios = [b / a for a, b in zip(values, values[1:])]
    assert max(ratios) == pytest.approx(min(ratios))
    model.set_epoch(0, 1)  # a single epoch: alpha stays at its start value
    assert float(model.alpha) == pytest.approx(0.5)


def test_alpha_is_saved_with_the_model():
    model = make_model()
    model.set_epoch(4, 5)
    restored = make_model()
    restored.load_state_dict(model.state_dict())
    assert float(restored.alpha) == pytest.approx(10.0)
    assert restored.code_threshold() == model.code_threshold()


@pytest.mark.parametrize("graph_source", ["input", "encoder"])
@pytest.mark.parametrize("task", list(FILTERS))
def test_forward_shapes_and_ranges(task, graph_source):
    model = make_model(task, graph_source=graph_source)
    x = torch.randn(20, 12)
    out = model(x)
    assert out["z1"].shape == (20, 16) and out["logits"].shape == (20, 10) and out["recon"].shape == (20, 12)
    assert torch.all((out["probs"] > 0) & (out["probs"] < 1))
    assert out["a_hat"].shape == (20, 20) and not out["a_hat"].requires_grad


def test_linear_head_is_a_projection_of_the_input():
    model = make_model(hash_head="linear")
    x = torch.randn(6, 12)
    torch.testing.assert_close(model.hash_logits(x), x @ model.head.weight.T + model.head.bias)


def test_threshold_is_logit_tau_over_alpha():
    model = make_model(tau=0.25, alpha=2.0)
    model.set_epoch(0, 5)
    assert model.code_threshold() == pytest.approx(math.log(0.25 / 0.75) / 2.0)


def trained_codes(task: str, hash_head: str, graph_source: str = "input"):
    """Codes after a few Adam steps of the HAGCN loss on fixed blobs (same seed, same batches for every filter)."""
    from functools import partial

    from losses import hagcn_loss
    from train import train
    gen = torch.Generator().manual_seed(5)
    x = torch.randn(96, 12, generator=gen) + 3 * torch.randn(4, 12, generator=gen).repeat_interleave(24, 0)
    model = make_model(task, hash_head, graph_source=graph_source)
    train(model, partial(hagcn_loss, lambda_=1.0), x, torch.zeros(96, dtype=torch.long), num_epochs=3,
          batch_size=32, lr=1e-2, seed=0, desc="t")
    return encode(model, x)


def test_the_filter_shapes_the_codes_only_through_an_mlp_head_or_an_encoder_graph():
    """With the paper's linear head and the graph built on the input, the loss splits into a reconstruction term
    that never reaches W2 and a similarity term that never reaches the filter: every filter gives the same codes.
    The mlp head (or an encoder-built graph) is what lets the filter change them."""
    linear = [trained_codes(task, "linear") for task in FILTERS]
    assert all((c == linear[0]).all() for c in linear[1:])
    mlp = [trained_codes(task, "mlp") for task in FILTERS]
    assert any((c != mlp[0]).any() for c in mlp[1:])
    encoder_graph = [trained_codes(task, "linear", "encoder") for task in FILTERS]
    assert any((c != encoder_graph[0]).any() for c in encoder_graph[1:])


def test_recon_weight_zero_never_runs_the_filter_or_the_decoder(monkeypatch):
    """--recon_weight 0 (main.build_hagcn) trains the hash head on the similarity term alone: a decoder or filter
    call fails the test, and the loss has no reconstruction term."""
    from functools import partial

    from arguments import parse_args
    from main import build_hagcn
    from train import train

    args = parse_args(["--recon_weight", "0", "--hidden", "16", "--knn", "3", "--sim_target", "knn",
                       "--graph_edges", "batch"])
    model, loss_fn = build_hagcn("cheby", 6, 12, args)

    def never(*a, **kw):
        raise AssertionError("ran")
    monkeypatch.setattr(model.decoder, "forward", never)
    monkeypatch.setattr(model.filter, "forward", never)
    x = torch.randn(32, 12, generator=torch.Generator().manual_seed(3))
    out = model(x)
    assert out["recon"] is None
    assert set(loss_fn(out, x, None)) == {"similarity"}
    train(model, partial(loss_fn), x, torch.zeros(32, dtype=torch.long), num_epochs=2, batch_size=16, lr=1e-3, seed=0,
          desc="no reconstruction")
    weighted, _ = build_hagcn("gcn", 6, 12, parse_args(["--recon_weight", "0.5", "--hidden", "16", "--knn", "3"]))
    assert weighted.reconstruct
