"""bench/target_ceiling.py: the real-valued mAP that the target's ceiling is measured with."""
from __future__ import annotations

import sys

import numpy as np

from conftest import REPO

sys.path.append(str(REPO / "bench"))  # after the repository: bench/search.py must not shadow search.py

from target_ceiling import cosine_map, training_pairs  # noqa: E402


def test_cosine_map_matches_a_hand_computed_ranking():
    """Query 0 ranks db rows 0, 1, 2; query 1 ranks rows 3, 2, 1. Label 0 for both: AP@3 = (1/1 + 2/3) / 2 and 1/2.
    A query whose label no row has (2) is skipped, as evaluate.mean_average_precision skips it."""
    db = np.array([[1.0, 0.0], [0.9, 0.5], [0.5, 0.9], [0.0, 1.0]], dtype=np.float32)
    query = np.array([[1.0, 0.05], [0.0, 1.0]], dtype=np.float32)
    db_labels = np.array([0, 1, 0, 1])
    assert np.isclose(cosine_map(query, db, np.array([0, 0]), db_labels, topk=3), ((1 + 2 / 3) / 2 + 1 / 2) / 2)
    assert np.isclose(cosine_map(query, db, np.array([0, 2]), db_labels, topk=3), (1 + 2 / 3) / 2)
    assert np.isclose(cosine_map(query, db, np.array([0, 2]), db_labels, topk=2), 1.0)


def test_cosine_map_is_one_on_separated_classes_and_about_chance_on_noise():
    rng = np.random.default_rng(0)
    centres = np.eye(8)[:4] * 10
    labels = rng.integers(0, 4, 400)
    rows = (centres[labels] + rng.normal(size=(400, 8))).astype(np.float32)
    assert cosine_map(rows[:100], rows[100:], labels[:100], labels[100:], topk=20) == 1.0
    noise = rng.normal(size=(400, 8)).astype(np.float32)
    assert cosine_map(noise[:100], noise[100:], labels[:100], labels[100:], topk=20) < 0.5


def test_training_pairs_are_disjoint_and_seeded():
    q, d = training_pairs(1000, 300)
    assert len(q) == len(d) == 300 and not set(q) & set(d)
    assert np.array_equal(q, training_pairs(1000, 300)[0])
