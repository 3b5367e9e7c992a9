"""evaluate.py against plain per-query references written the slow, obvious way (numpy per query, stable argsort;
for ties="expected", every order of the tied items enumerated), on short random codes with many distance ties, for
every input form: {0,1}, {-1,+1}, packed, integer and one-hot labels, chunked and unchunked."""
from __future__ import annotations

import itertools
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import evaluate  # noqa: E402
from evaluate import (PackedCodes, as_bits, evaluate_codes, from_packbits, hamming_topk,  # noqa: E402
                      mean_average_precision, pack, pr_curve, precision_recall_at_k, precision_within_radius)

N_QUERY, N_DB = 60, 500


# ------------------------------------------------------------------------------------------- slow references

def ref_distances(q_bits: np.ndarray, db_bits: np.ndarray) -> np.ndarray:
    return (q_bits[:, None, :] != db_bits[None, :, :]).sum(-1)


def ref_relevance(q_labels: np.ndarray, db_labels: np.ndarray, i: int, relevance: str = "label") -> np.ndarray:
    if relevance == "paper_repo":
        return np.dot(q_labels[i], db_labels.T) > 0
    if q_labels.ndim == 1:
        return db_labels == q_labels[i]
    return (db_labels[:, q_labels[i] > 0] > 0).any(1)


def ref_map(q_bits, db_bits, q_labels, db_labels, topk, relevance="label") -> float:
    """The paper repo's loop: per query rank by distance (stable), AP over the top k, skip queries without a hit."""
    dist = ref_distances(q_bits, db_bits)
    aps = []
    for i in range(len(q_bits)):
        order = np.argsort(dist[i], kind="stable")[:topk]
        rel = ref_relevance(q_labels, db_labels, i, relevance)[order].astype(float)
        if rel.sum() == 0:
            continue
        precision = np.cumsum(rel) / np.arange(1, len(rel) + 1)
        aps.append((precision * rel).sum() / rel.sum())
    return float(np.mean(aps)) if aps else 0.0


def ref_precision_recall_at_k(q_bits, db_bits, q_labels, db_labels, k) -> tuple[float, float]:
    dist = ref_distances(q_bits, db_bits)
    precisions, recalls = [], []
    for i in range(len(q_bits)):
        rel = ref_relevance(q_labels, db_labels, i)
        hits = rel[np.argsort(dist[i], kind="stable")[:k]].sum()
        precisions.append(hits / k)
        if rel.sum():
            recalls.append(hits / rel.sum())
    return float(np.mean(precisions)), float(np.mean(recalls))


def ref_tie_orders(q_bits, db_bits, q_labels, db_labels, topk) -> tuple[float, float, float]:
    """(mAP@k, precision@k, recall@k) averaged over every order of the items tied at each distance, by enumeration
    (itertools.permutations within each tie group): a query's AP is the mean over orders (0 for an order without
    a hit in the top k), and it is skipped only when no order has a hit."""
    dist = ref_distances(q_bits, db_bits)
    k = len(db_bits) if topk is None else topk
    aps, precisions, recalls = [], [], []
    for i in range(len(q_bits)):
        rel = ref_relevance(q_labels, db_labels, i)
        groups = [np.flatnonzero(dist[i] == d) for d in np.unique(dist[i])]
        ap_orders, hit_orders = [], []
        for perms in itertools.product(*(itertools.permutations(g) for g in groups)):
            r = rel[np.concatenate(perms)[:k]].astype(float)
            hit_orders.append(r.sum())
            ap_orders.append((np.cumsum(r) / np.arange(1, len(r) + 1) * r).sum() / r.sum() if r.sum() else 0.0)
        if max(hit_orders) > 0:
            aps.append(np.mean(ap_orders))
        precisions.append(np.mean(hit_orders) / k)
        if rel.sum():
            recalls.append(np.mean(hit_orders) / rel.sum())
    return (float(np.mean(aps)) if aps else 0.0), float(np.mean(precisions)), (float(np.mean(recalls)) if recalls
                                                                             else 0.0)


def ref_radius_precision(q_bits, db_bits, q_labels, db_labels, radius) -> float:
    dist = ref_distances(q_bits, db_bits)
    out = []
    for i in range(len(q_bits)):
        found = dist[i] <= radius
        out.append(ref_relevance(q_labels, db_labels, i)[found].mean() if found.any() else 0.0)
    return float(np.mean(out))


def ref_pr_curve(q_bits, db_bits, q_labels, db_labels) -> tuple[np.ndarray, np.ndarray]:
    n_bits = q_bits.shape[1]
    prec = np.array([ref_radius_precision(q_bits, db_bits, q_labels, db_labels, r) for r in range(n_bits + 1)])
    dist = ref_distances(q_bits, db_bits)
    recalls = []
    for i in range(len(q_bits)):
        rel = ref_relevance(q_labels, db_labels, i)
        if rel.sum():
            recalls.append([(rel & (dist[i] <= r)).sum() / rel.sum() for r in range(n_bits + 1)])
    return prec, np.mean(recalls, axis=0)


# ------------------------------------------------------------------------------------------- data

def make_data(n_bits: int, n_classes: int = 10, seed: int = 0):
    rng = np.random.default_rng(seed)
    q_bits = rng.integers(0, 2, (N_QUERY, n_bits)).astype(bool)
    db_bits = rng.integers(0, 2, (N_DB, n_bits)).astype(bool)
    db_labels = rng.integers(0, n_classes, N_DB)
    q_labels = rng.integers(0, n_classes, N_QUERY)
    # make codes informative, so the top of the ranking is not all noise: flip most bits of items to a class code
    centres = rng.integers(0, 2, (n_classes, n_bits)).astype(bool)
    q_bits = np.where(rng.random(q_bits.shape) < 0.7, centres[q_labels], q_bits)
    db_bits = np.where(rng.random(db_bits.shape) < 0.7, centres[db_labels], db_bits)
    return q_bits, db_bits, q_labels, db_labels


def one_hot(labels: np.ndarray, n_classes: int = 10) -> np.ndarray:
    return np.eye(n_classes, dtype=np.float32)[labels]


def code_forms(bits: np.ndarray) -> dict:
    return {"01": bits.astype(np.int8), "pm1": np.where(bits, 1.0, -1.0), "packed": pack(bits)}


# ------------------------------------------------------------------------------------------- tests

@pytest.mark.parametrize("n_bits", [8, 16])
@pytest.mark.parametrize("topk", [1, 10, 100, None])
def test_map_matches_reference(n_bits, topk):
    q, db, ql, dl = make_data(n_bits)
    want = ref_map(q, db, ql, dl, topk)
    for form in ("01", "pm1", "packed"):
        got = mean_average_precision(code_forms(q)[form], code_forms(db)[form], ql, dl, topk)
        assert abs(got - want) < 1e-9, form
    got_one_hot = mean_average_precision(q, db, one_hot(ql), one_hot(dl), topk)
    assert abs(got_one_hot - want) < 1e-9


def test_multi_hot_labels():
    q, db, ql, dl = make_data(16)
    rng = np.random.default_rng(1)
    q_multi = (one_hot(ql) + (rng.random((N_QUERY, 10)) < 0.1)) > 0
    db_multi = (one_hot(dl) + (rng.random((N_DB, 10)) < 0.1)) > 0
    for topk in (10, None):
        got = mean_average_precision(q, db, q_multi, db_multi, topk)
        assert abs(got - ref_map(q, db, q_multi, db_multi, topk)) < 1e-9


def test_multi_hot_uint8_labels_on_random_codes_match_a_plain_per_query_loop():
    """The labels main.py stores for multi-label data ((n, C) uint8, one to three classes per item) on random
    codes: mAP@k, precision@k and recall@k against Python sets and lists, one query at a time."""
    rng = np.random.default_rng(7)
    n_query, n_db, n_bits, n_classes, k = 25, 300, 12, 10, 40
    q, db = rng.integers(0, 2, (n_query, n_bits)), rng.integers(0, 2, (n_db, n_bits))
    def labels(n):
        Y = np.zeros((n, n_classes), np.uint8)
        for row in Y:
            row[rng.choice(n_classes, rng.integers(1, 4), replace=False)] = 1
        return Y
    ql, dl = labels(n_query), labels(n_db)
    aps, precisions, recalls = [], [], []
    for i in range(n_query):
        mine = {c for c in range(n_classes) if ql[i, c]}
        relevant = [bool(mine & {c for c in range(n_classes) if dl[j, c]}) for j in range(n_db)]
        dist = [sum(int(a != b) for a, b in zip(q[i], db[j])) for j in range(n_db)]
        top = sorted(range(n_db), key=lambda j: (dist[j], j))[:k]
        hits, precision_sum = 0, 0.0
        for rank, j in enumerate(top, 1):
            if relevant[j]:
                hits += 1
                precision_sum += hits / rank
        if hits:
            aps.append(precision_sum / hits)
        precisions.append(hits / k)
        recalls.append(hits / sum(relevant))
    m = evaluate_codes(q, db, ql, dl, k)
    assert m["map"] == pytest.approx(np.mean(aps), abs=1e-12)
    assert (m["precision_at_k"], m["recall_at_k"]) == pytest.approx((np.mean(precisions), np.mean(recalls)))


def test_many_classes_and_long_codes():
    """Multi-word codes (200 bits) and multi-word multi-hot labels (100 classes)."""
    q, db, ql, dl = make_data(200, n_classes=100, seed=3)
    assert abs(mean_average_precision(q, db, ql, dl, 50) - ref_map(q, db, ql, dl, 50)) < 1e-9
    got = mean_average_precision(q, db, one_hot(ql, 100), one_hot(dl, 100), 50)
    assert abs(got - ref_map(q, db, ql, dl, 50)) < 1e-9


def test_topk_larger_than_database_is_whole_database():
    q, db, ql, dl = make_data(8)
    assert mean_average_precision(q, db, ql, dl, 10 * N_DB) == mean_average_precision(q, db, ql, dl, None)


def test_chunked_equals_unchunked(monkeypatch):
    q, db, ql, dl = make_data(16)
    whole = evaluate_codes(q, db, ql, dl, 100)
    whole_map = mean_average_precision(q, db, ql, dl, 100)
    monkeypatch.setattr(evaluate, "CHUNK_SIZE", 7)
    chunked = evaluate_codes(q, db, ql, dl, 100)
    for key in whole:
        np.testing.assert_allclose(chunked[key], whole[key], rtol=0, atol=1e-12, err_msg=key)
    assert abs(mean_average_precision(q, db, ql, dl, 100) - whole_map) < 1e-12
    assert abs(whole["map"] - whole_map) < 1e-12  # histogram path == threshold-search path


@pytest.mark.parametrize("n_bits", [1, 3, 256, 1000])
def test_k_th_distance_far_from_the_previous_query(n_bits):
    """Queries alternate between copies of database items (k-th distance ~0) and complements (~n_bits), so the
    search for the k-th distance, which starts from the previous query's, must travel both ways."""
    rng = np.random.default_rng(2)
    db = rng.integers(0, 2, (300, n_bits)).astype(bool)
    dl = rng.integers(0, 5, 300)
    pick = rng.integers(0, 300, 40)
    q = np.where((np.arange(40) % 2 == 0)[:, None], db[pick], ~db[pick])
    q ^= rng.random(q.shape) < 0.02
    ql = dl[pick]
    for topk in (1, 25, None):
        assert abs(mean_average_precision(q, db, ql, dl, topk) - ref_map(q, db, ql, dl, topk)) < 1e-9
    dist = ref_distances(q, db)
    for k in (1, 25, 300):
        idx, d = hamming_topk(q, db, k)
        np.testing.assert_array_equal(idx, np.argsort(dist, axis=1, kind="stable")[:, :k])


@pytest.mark.parametrize("n_bits", [1, 8, 16, 64, 100])
def test_hamming_topk_matches_stable_argsort(n_bits):
    q, db, _, _ = make_data(n_bits)
    dist = ref_distances(q, db)
    for k in (1, 37, N_DB):
        idx, d = hamming_topk(q, db, k)
        want = np.argsort(dist, axis=1, kind="stable")[:, :k]
        np.testing.assert_array_equal(idx, want)
        np.testing.assert_array_equal(d, np.take_along_axis(dist, want, 1))
        assert idx.dtype == np.int64


def test_queries_without_relevant_item_in_top_k_are_skipped():
    # 2-bit codes; query 0 (label 0) sees labels [1, 0, 0] at distances [0, 1, 2]; query 1 (label 5) has no match
    db = np.array([[0, 0], [0, 1], [1, 1]])
    q = np.array([[0, 0], [0, 0]])
    dl, ql = np.array([1, 0, 0]), np.array([0, 5])
    # top 1: query 0 has no hit and query 1 never has one -> no query counted
    assert mean_average_precision(q, db, ql, dl, 1) == 0.0
    # top 2: query 0 hits at rank 2 -> AP 1/2; query 1 skipped, not counted as 0
    assert mean_average_precision(q, db, ql, dl, 2) == pytest.approx(0.5)
    # whole db: hits at ranks 2, 3 -> (1/2 + 2/3) / 2
    assert mean_average_precision(q, db, ql, dl, None) == pytest.approx((1 / 2 + 2 / 3) / 2)
    p, r = precision_recall_at_k(q, db, ql, dl, 2)
    assert p == pytest.approx((1 / 2 + 0) / 2) and r == pytest.approx(1 / 2)  # recall: query 1 skipped


def test_ties_go_to_lower_index():
    db = np.array([[1, 1], [0, 0], [0, 0], [1, 0]])
    q = np.array([[0, 0]])
    idx, d = hamming_topk(q, db, 3)
    assert idx.tolist() == [[1, 2, 3]] and d.tolist() == [[0, 0, 1]]
    # relevant item 2 ties with irrelevant item 1 at distance 0: rank 2, AP 1/2
    assert mean_average_precision(q, db, np.array([7]), np.array([0, 0, 7, 0]), None) == pytest.approx(0.5)


@pytest.mark.parametrize("k", [1, 10, 100])
def test_precision_recall_at_k(k):
    q, db, ql, dl = make_data(16)
    got = precision_recall_at_k(pack(q), pack(db), ql, dl, k)
    np.testing.assert_allclose(got, ref_precision_recall_at_k(q, db, ql, dl, k), rtol=0, atol=1e-12)


@pytest.mark.parametrize("n_bits", [8, 16])
def test_precision_within_radius_and_pr_curve(n_bits):
    q, db, ql, dl = make_data(n_bits)
    for radius in (0, 2, 5, n_bits + 3):
        got = precision_within_radius(q, db, ql, dl, radius)
        assert abs(got - ref_radius_precision(q, db, ql, dl, radius)) < 1e-12
    precision, recall = pr_curve(q, db, ql, dl)
    want_p, want_r = ref_pr_curve(q, db, ql, dl)
    assert precision.shape == recall.shape == (n_bits + 1,)
    np.testing.assert_allclose(precision, want_p, rtol=0, atol=1e-12)
    np.testing.assert_allclose(recall, want_r, rtol=0, atol=1e-12)
    assert recall[-1] == pytest.approx(1.0)


def test_evaluate_codes_agrees_with_single_metrics():
    q, db, ql, dl = make_data(16)
    m = evaluate_codes(np.where(q, 1, -1), pack(db), ql, dl, 100)
    assert set(m) == {"map", "map_index", "map_expected", "precision_at_k", "recall_at_k", "precision_r2",
                      "pr_precision", "pr_recall"}
    assert m["map"] == m["map_index"] == pytest.approx(ref_map(q, db, ql, dl, 100), abs=1e-12)
    assert (m["precision_at_k"], m["recall_at_k"]) == pytest.approx(ref_precision_recall_at_k(q, db, ql, dl, 100))
    assert m["precision_r2"] == pytest.approx(ref_radius_precision(q, db, ql, dl, 2), abs=1e-12)
    np.testing.assert_allclose(m["pr_precision"], ref_pr_curve(q, db, ql, dl)[0], atol=1e-12)


# ------------------------------------------------------------------------------------------- tie-aware metrics

def tiny_cases(n_cases: int, seed: int, multi_hot: bool):
    """Random tiny problems (1-3 bits, 1-7 database items: every tie group small enough to enumerate), with
    k = None, and k from 1..N (often through a tie group)."""
    rng = np.random.default_rng(seed)
    for _ in range(n_cases):
        n_bits, n_db, n_query = int(rng.integers(1, 4)), int(rng.integers(1, 8)), 4
        q, db = rng.integers(0, 2, (n_query, n_bits)).astype(bool), rng.integers(0, 2, (n_db, n_bits)).astype(bool)
        if multi_hot:
            ql, dl = rng.random((n_query, 4)) < 0.3, rng.random((n_db, 4)) < 0.3
        else:
            ql, dl = rng.integers(0, 4, n_query), rng.integers(0, 3, n_db)  # class 3: queries with no relevant item
        for topk in (None, int(rng.integers(1, n_db + 1))):
            yield q, db, ql, dl, topk


@pytest.mark.parametrize("multi_hot", [False, True])
def test_expected_ties_match_enumeration_of_all_tie_orders(multi_hot):
    n_checked = 0
    for q, db, ql, dl, topk in tiny_cases(60, seed=int(multi_hot), multi_hot=multi_hot):
        want_map, want_p, want_r = ref_tie_orders(q, db, ql, dl, topk)
        assert abs(mean_average_precision(q, db, ql, dl, topk, ties="expected") - want_map) < 1e-12
        m = evaluate_codes(q, db, ql, dl, topk, ties="expected")
        assert abs(m["map"] - want_map) < 1e-12 and abs(m["map_expected"] - want_map) < 1e-12
        assert abs(m["precision_at_k"] - want_p) < 1e-12 and abs(m["recall_at_k"] - want_r) < 1e-12
        assert m["map_index"] == pytest.approx(ref_map(q, db, ql, dl, topk), abs=1e-12)
        if topk is not None:
            got = precision_recall_at_k(q, db, ql, dl, topk, ties="expected")
            np.testing.assert_allclose(got, (want_p, want_r), rtol=0, atol=1e-12)
        n_checked += 1
    assert n_checked == 120


def test_expected_ties_when_k_cuts_a_tie_group_by_hand():
    """Four items at distance 0, two relevant, k = 2: r relevant of them in the top 2 with P(r) = 1/6, 4/6, 1/6;
    AP = 0, (1 + 1/2) / 2, 1. The stable order lists irrelevant items 0, 1 first and skips the query."""
    q, db = np.zeros((1, 4)), np.zeros((4, 4))
    ql, dl = np.array([1]), np.array([0, 0, 1, 1])
    assert mean_average_precision(q, db, ql, dl, 2, ties="expected") == pytest.approx(4 / 6 * 3 / 4 + 1 / 6, abs=1e-15)
    assert mean_average_precision(q, db, ql, dl, 2, ties="index") == 0.0
    assert precision_recall_at_k(q, db, ql, dl, 2, ties="expected") == pytest.approx((0.5, 0.5), abs=1e-15)
    # a query with no relevant item anywhere is skipped by both rules, not counted as 0
    two = mean_average_precision(np.zeros((2, 4)), db, np.array([1, 9]), dl, 2, ties="expected")
    assert two == pytest.approx(4 / 6 * 3 / 4 + 1 / 6, abs=1e-15)


def test_expected_ties_do_not_depend_on_the_database_order():
    """Big tie groups (2-bit codes, 2000 items, k = 300 inside a group): shuffling the database changes the stable
    mAP but not the expected one."""
    rng = np.random.default_rng(4)
    q, db = rng.integers(0, 2, (50, 2)), rng.integers(0, 2, (2000, 2))
    ql, dl = rng.integers(0, 3, 50), np.sort(rng.integers(0, 3, 2000))  # sorted by class: the stable order is biased
    perm = rng.permutation(2000)
    for topk in (1, 300, None):
        a = mean_average_precision(q, db, ql, dl, topk, ties="expected")
        b = mean_average_precision(q, db[perm], ql, dl[perm], topk, ties="expected")
        assert abs(a - b) < 1e-12
        assert abs(evaluate_codes(q, db[perm], ql, dl[perm], topk)["map_expected"] - a) < 1e-12
    index = [mean_average_precision(q, db[p], ql, dl[p], 300) for p in (np.arange(2000), perm)]
    assert abs(index[0] - index[1]) > 1e-3


def test_expected_ties_agree_with_the_mean_over_random_orders():
    """One query against large tie groups (k = 300 cuts a group of ~500, of which ~1/3 relevant): the mean AP over
    random database orders approaches the expected AP (within 5 standard errors of the mean)."""
    rng = np.random.default_rng(5)
    q, db = np.zeros((1, 2)), rng.integers(0, 2, (2000, 2))
    ql, dl = np.array([0]), rng.integers(0, 3, 2000)
    aps = [mean_average_precision(q, db[p], ql, dl[p], 300) for p in (rng.permutation(2000) for _ in range(400))]
    want = mean_average_precision(q, db, ql, dl, 300, ties="expected")
    assert abs(np.mean(aps) - want) < 5 * np.std(aps) / np.sqrt(len(aps))


def test_index_ties_are_the_default_stable_order():
    q, db, ql, dl = make_data(8)
    for topk in (7, None):
        stable = mean_average_precision(q, db, ql, dl, topk, ties="index")
        assert stable == mean_average_precision(q, db, ql, dl, topk) == evaluate_codes(q, db, ql, dl, topk)["map"]
        assert abs(stable - ref_map(q, db, ql, dl, topk)) < 1e-12
        assert stable != mean_average_precision(q, db, ql, dl, topk, ties="expected")


def test_paper_repo_relevance_defect_on_integer_labels():
    """np.dot(q, db) > 0 on labels 0..9 means 'both non-zero': random codes score ~0.9 instead of ~0.1."""
    rng = np.random.default_rng(0)
    q, db = rng.integers(0, 2, (200, 32)), rng.integers(0, 2, (2000, 32))
    ql, dl = np.repeat(np.arange(10), 20), np.repeat(np.arange(10), 200)
    paper = mean_average_precision(q, db, ql, dl, 200, relevance="paper_repo")
    assert 0.85 < paper < 0.95
    assert mean_average_precision(q, db, ql, dl, 200) < 0.15
    assert abs(paper - ref_map(q.astype(bool), db.astype(bool), ql, dl, 200, "paper_repo")) < 1e-9
    # on one-hot labels the paper repo's test is the right one
    assert mean_average_precision(q, db, one_hot(ql), one_hot(dl), 200, relevance="paper_repo") == pytest.approx(
        mean_average_precision(q, db, ql, dl, 200), abs=1e-12)


def test_pack_and_packbits_round_trip():
    q, db, _, _ = make_data(21)
    for bits in (q, db):
        packed = np.packbits(bits, axis=1)
        assert from_packbits(packed, 21).n_bits == 21
        np.testing.assert_array_equal(from_packbits(packed, 21).words, pack(bits).words)
        np.testing.assert_array_equal(PackedCodes.from_packbits(packed, 21).words, pack(bits).words)
    idx_a, d_a = hamming_topk(from_packbits(np.packbits(q, axis=1), 21), pack(db), 20)
    idx_b, d_b = hamming_topk(q, db, 20)
    np.testing.assert_array_equal(idx_a, idx_b)
    np.testing.assert_array_equal(d_a, d_b)


def test_as_bits():
    np.testing.assert_array_equal(as_bits(np.array([[-1, 1, 1]])), [[False, True, True]])
    np.testing.assert_array_equal(as_bits(np.array([[0.0, 1.0]])), [[False, True]])
    np.testing.assert_array_equal(as_bits(np.array([[True, False]])), [[True, False]])
    assert as_bits(np.ones((2, 3), np.uint8)).all()


@pytest.mark.parametrize("call", [
    lambda: as_bits(np.array([[0, 2]])),
    lambda: as_bits(np.array([[0, -1, 1]])),
    lambda: as_bits(np.array([[0.5, 1]])),
    lambda: as_bits(np.array([[np.nan, 1]])),
    lambda: pack(np.array([0, 1, 1])),
    lambda: from_packbits(np.zeros((3, 2), np.uint8), 20),
    lambda: from_packbits(np.full((3, 1), 255, np.uint8), 5),
    lambda: mean_average_precision(np.zeros((3, 8)), np.zeros((5, 16)), np.zeros(3), np.zeros(5)),
    lambda: mean_average_precision(np.zeros((3, 8)), np.zeros((5, 8)), np.zeros(4), np.zeros(5)),
    lambda: mean_average_precision(np.zeros((3, 8)), np.zeros((5, 8)), np.zeros(3), np.zeros(6)),
    lambda: mean_average_precision(np.zeros((3, 8)), np.zeros((5, 8)), np.zeros(3), np.zeros((5, 2))),
    lambda: mean_average_precision(np.zeros((3, 8)), np.zeros((5, 8)), np.zeros((3, 3)), np.zeros((5, 2))),
    lambda: mean_average_precision(np.zeros((3, 8)), np.zeros((5, 8)), np.full(3, 0.5), np.zeros(5)),
    lambda: mean_average_precision(np.zeros((3, 8)), np.zeros((5, 8)), np.zeros(3), np.zeros(5), topk=0),
    lambda: mean_average_precision(np.zeros((3, 8)), np.zeros((5, 8)), np.zeros(3), np.zeros(5), relevance="x"),
    lambda: mean_average_precision(np.zeros((0, 8)), np.zeros((5, 8)), np.zeros(0), np.zeros(5)),
    lambda: mean_average_precision(np.zeros((3, 8)), np.zeros((5, 8)), np.zeros(3), np.zeros(5), ties="random"),
    lambda: evaluate_codes(np.zeros((3, 8)), np.zeros((5, 8)), np.zeros(3), np.zeros(5), None, ties="stable"),
    lambda: precision_recall_at_k(np.zeros((3, 8)), np.zeros((5, 8)), np.zeros(3), np.zeros(5), 6),
    lambda: precision_within_radius(np.zeros((3, 8)), np.zeros((5, 8)), np.zeros(3), np.zeros(5), -1),
    lambda: hamming_topk(np.zeros((3, 8)), np.zeros((5, 8)), 0),
    lambda: hamming_topk(np.zeros((3, 8)), np.zeros((5, 8)), 6),
    lambda: hamming_topk(PackedCodes(np.zeros((3, 2), np.uint64), 8), np.zeros((5, 8)), 1),
])
def test_bad_inputs_raise(call):
    with pytest.raises(ValueError):
        call()


@pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="needs two cores to tell one thread from all")
def test_evaluating_leaves_torchs_thread_count_alone():
    """A process limited to one thread (OMP_NUM_THREADS=1) still trains on one after a parallel evaluation: numba's
    OpenMP layer would set the libgomp it shares with torch to every core (a validation each epoch then doubled the
    CPU time of every training step)."""
    code = ("import numpy as np, torch, evaluate; n = torch.get_num_threads(); "
            "q = np.random.randint(0, 2, (300, 32)).astype(np.uint8); "
            "evaluate.mean_average_precision(q, q, np.zeros(300), np.zeros(300), 200, ties='expected'); "
            "print(n, torch.get_num_threads())")
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(Path(__file__).resolve().parents[1]))
    env.pop("NUMBA_THREADING_LAYER", None)
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["1", "1"]
