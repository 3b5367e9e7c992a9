"""Retrieval metrics for binary hash codes: exact Hamming ranking, mAP@k, precision/recall@k, precision within a
Hamming radius and the precision-recall curve over radii.

Ranking: the database is ordered by Hamming distance to the query, ties going to the lower database index (a
stable order). Codes are packed into uint64 words; numba kernels, parallel over queries, compute popcount
distances for one query at a time, find the distance t of the k-th item by counting, collect the top k in one
sweep, and rank within it by counting sort (an item's rank is the number of items closer than it plus the items
at its distance with a lower index). Nothing is sorted, no Q x N matrix exists: memory is O(threads x N), plus
O(chunk x L) for the per-query histograms of distances behind the precision-recall curve.

Ties (ties="expected"): Hamming distances take only L + 1 values, so the stable order is one arbitrary order of
many tied items. The tie-aware AP@k (He, Cakir, Bargal & Sclaroff, "Hashing as Tie-Aware Learning to Rank",
CVPR 2018) is its exact expectation over every order of the items tied at each distance; it needs only the
per-query counts of relevant and of all items at each distance up to the k-th, so no top k is collected.

Relevance ("label", the default): integer labels are relevant when equal, 2-D one-hot/multi-hot labels when
they share a class (an entry > 0). relevance="paper_repo" reproduces the paper repo's test
`np.dot(queryL[i], retrievalL.T) > 0` on whatever labels are given: on integer labels 0..C-1 it means "both
labels non-zero" (random codes score ~0.9 mAP on 10 classes). It is for comparison only.
"""
from __future__ import annotations

import os
from typing import Iterator, NamedTuple

import numba
import numpy as np
from llvmlite import ir
from numba import njit, prange, types
from numba.extending import intrinsic

# numba's default OpenMP threading layer shares torch's libgomp and, when it starts, sets its thread count to all
# cores: a run limited to one thread (OMP_NUM_THREADS=1) then trains on two after its first evaluation, and each step
# costs twice the CPU time (measured: 0.53 -> 1.93 s of CPU for the same 200 steps). numba's own work queue touches
# no OpenMP state.
if "NUMBA_THREADING_LAYER" not in os.environ:
    numba.config.THREADING_LAYER = "workqueue"

CHUNK_SIZE = 1024  # queries per kernel call: bounds the per-query histograms to CHUNK_SIZE x (L + 1)
MAX_BITS = 16384  # distances are stored as 2 * distance + relevant in uint16
PAD = 0xFFFF  # fills the distance buffer to whole 64-item blocks, beyond every limit (2 * MAX_BITS + 1)
LANES = 8  # copies of the distance histogram that consecutive database items count into
TIES = ("index", "expected")  # rank tied items by database index, or average over their orders


class PackedCodes(NamedTuple):
    """Binary codes packed 8 bits per byte in np.packbits order (big bit order), rows padded with zero bytes to
    whole uint64 words: words is (n, ceil(n_bits / 64)) uint64."""
    words: np.ndarray
    n_bits: int

    @classmethod
    def from_packbits(cls, packed: np.ndarray, n_bits: int) -> PackedCodes:
        return from_packbits(packed, n_bits)


def as_bits(codes: np.ndarray) -> np.ndarray:
    """Bool bits (bit = code > 0) of {0,1} or {-1,+1} codes of any numeric or bool dtype."""
    codes = np.asarray(codes)
    if codes.dtype == np.bool_:
        return codes
    if codes.dtype.kind not in "iuf":
        raise ValueError(f"codes must be numeric or bool, got dtype {codes.dtype}")
    ones, zeros, minus = codes == 1, codes == 0, codes == -1
    if not np.all(ones | zeros | minus):
        raise ValueError("codes must take values in {0,1} or {-1,+1}")
    if zeros.any() and minus.any():
        raise ValueError("codes mix 0 and -1: give either {0,1} or {-1,+1} codes")
    return ones


def _bytes_to_words(packed: np.ndarray) -> np.ndarray:
    """(n, n_bytes) uint8 -> (n, ceil(n_bytes / 8)) uint64, padding each row with zero bytes."""
    n, n_bytes = packed.shape
    padded = np.zeros((n, -(-n_bytes // 8) * 8), np.uint8)
    padded[:, :n_bytes] = packed
    return padded.view(np.uint64)


def pack(codes: np.ndarray) -> PackedCodes:
    """Pack 2-D {0,1} / {-1,+1} codes (one row per item) into uint64 words."""
    bits = as_bits(codes)
    if bits.ndim != 2:
        raise ValueError(f"codes must be 2-D (items x bits), got shape {bits.shape}")
    if not 1 <= bits.shape[1] <= MAX_BITS:
        raise ValueError(f"code length must be 1..{MAX_BITS} bits, got {bits.shape[1]}")
    return PackedCodes(_bytes_to_words(np.packbits(bits, axis=1)), bits.shape[1])


def from_packbits(packed: np.ndarray, n_bits: int) -> PackedCodes:
    """Read back codes exported as np.packbits(bits, axis=1) (default big bit order, zero padding)."""
    packed = np.asarray(packed)
    if packed.dtype != np.uint8 or packed.ndim != 2:
        raise ValueError(f"packed codes must be a 2-D uint8 array, got {packed.dtype} of shape {packed.shape}")
    if not 1 <= n_bits <= MAX_BITS:
        raise ValueError(f"code length must be 1..{MAX_BITS} bits, got {n_bits}")
    if packed.shape[1] != -(-n_bits // 8):
        raise ValueError(f"{n_bits} bits pack into {-(-n_bits // 8)} bytes per row, got {packed.shape[1]}")
    if n_bits % 8 and np.any(packed[:, -1] & np.uint8(0xFF >> (n_bits % 8))):
        raise ValueError("padding bits after the last code bit must be zero (as np.packbits writes them)")
    return PackedCodes(_bytes_to_words(packed), int(n_bits))


def _as_packed(codes: np.ndarray | PackedCodes, name: str) -> PackedCodes:
    if isinstance(codes, PackedCodes):
        words = np.ascontiguousarray(codes.words)
        if words.dtype != np.uint64 or words.ndim != 2 or words.shape[1] != -(-codes.n_bits // 64):
            raise ValueError(f"{name}: PackedCodes words must be (n, ceil(n_bits / 64)) uint64, got {words.dtype} "
                             f"of shape {words.shape} for {codes.n_bits} bits")
        return PackedCodes(words, codes.n_bits)
    try:
        return pack(codes)
    except ValueError as e:
        raise ValueError(f"{name}: {e}") from None


def _packed_pair(query_codes, db_codes) -> tuple[PackedCodes, PackedCodes]:
    q, db = _as_packed(query_codes, "query_codes"), _as_packed(db_codes, "db_codes")
    if q.n_bits != db.n_bits:
        raise ValueError(f"query codes have {q.n_bits} bits but database codes have {db.n_bits}")
    if len(q.words) == 0 or len(db.words) == 0:
        raise ValueError(f"need at least one query and one database item, got {len(q.words)} and {len(db.words)}")
    return q, db


def _class_words(labels: np.ndarray) -> np.ndarray:
    """Multi-hot labels (n, C) as int64 bit words (n, ceil(C / 64)): bit c set when labels[:, c] > 0."""
    return _bytes_to_words(np.packbits(labels > 0, axis=1)).view(np.int64)


def _sign_bits(labels: np.ndarray) -> np.ndarray:
    """Integer labels as (n, 1) bit words with bit 0 = positive, bit 1 = negative: two labels share a bit exactly
    when their product is > 0, the paper repo's relevance."""
    return ((labels > 0) + 2 * (labels < 0)).astype(np.int64)[:, None]


def _label_rows(query_labels, db_labels, n_query: int, n_db: int, relevance: str
                ) -> tuple[np.ndarray, np.ndarray, bool]:
    """Labels as int64 rows for the kernel, and whether relevance is equality of the single column (integer labels)
    or else a common set bit in the rows (multi-hot classes, or the signs of integer labels for paper_repo)."""
    if relevance not in ("label", "paper_repo"):
        raise ValueError(f"relevance must be 'label' or 'paper_repo', got {relevance!r}")
    ql, dl = np.asarray(query_labels), np.asarray(db_labels)
    if len(ql) != n_query or len(dl) != n_db:
        raise ValueError(f"got {len(ql)} query labels for {n_query} query codes and {len(dl)} database labels "
                         f"for {n_db} database codes")
    if ql.ndim != dl.ndim or ql.ndim not in (1, 2) or ql.shape[1:] != dl.shape[1:]:
        raise ValueError(f"labels must be both 1-D (integer classes) or both 2-D with the same number of classes "
                         f"(one-hot/multi-hot), got shapes {ql.shape} and {dl.shape}")
    if ql.dtype.kind not in "biuf" or dl.dtype.kind not in "biuf":
        raise ValueError(f"labels must be numeric, got {ql.dtype} and {dl.dtype}")
    if not (np.all(np.isfinite(ql)) and np.all(np.isfinite(dl))):
        raise ValueError("labels must be finite")
    if ql.ndim == 2:
        if (ql < 0).any() or (dl < 0).any():
            raise ValueError("2-D labels must be non-negative (one-hot/multi-hot: class c present when entry > 0)")
        return _class_words(ql), _class_words(dl), False
    if relevance == "paper_repo":
        return _sign_bits(ql), _sign_bits(dl), False
    if np.any(ql != np.round(ql)) or np.any(dl != np.round(dl)):
        raise ValueError("1-D labels must be integer class ids")
    return ql.astype(np.int64)[:, None], dl.astype(np.int64)[:, None], True


# ---------------------------------------------------------------------------------------------------- kernels
# Per query, a thread fills coded[j] = 2 * Hamming distance + relevant for the whole database and finds the distance
# t of the k-th item, from vectorised counts of the items within a distance (or from the histogram of distances
# when the caller wants histograms). One sweep in index order then collects the top k: every item closer than t
# and the first items at distance t. Within that set, an item's rank is the number of set items closer than it
# plus the set items at its distance that come before it: a counting sort, done without moving anything.
# The buffer is padded to whole blocks of 64 with PAD, which no distance limit reaches, so that counts and the
# sweep look at 64 items at a time with one vector compare.

@intrinsic
def _popcount(typingctx, x):
    """Number of set bits of a uint64 (LLVM ctpop: one POPCNT instruction on x86-64)."""
    def codegen(context, builder, signature, args):
        return builder.ctpop(args[0])
    return types.int64(types.uint64), codegen


@intrinsic
def _mask_within(typingctx, coded, base, limit):
    """uint64 with bit u set when coded[base + u] <= limit, u < 64 (needs base + 64 <= len(coded)): one compare of
    a <64 x i16> vector, whose <64 x i1> result is the mask (a k-register on AVX-512, movemasks elsewhere)."""
    def codegen(context, builder, signature, args):
        vector = ir.VectorType(ir.IntType(16), 64)
        data = context.make_array(signature.args[0])(context, builder, args[0]).data
        values = builder.load(builder.bitcast(builder.gep(data, [args[1]]), vector.as_pointer()), align=2)
        first = builder.insert_element(ir.Constant(vector, ir.Undefined), builder.trunc(args[2], ir.IntType(16)),
                                       ir.Constant(ir.IntType(32), 0))
        limits = builder.shuffle_vector(first, ir.Constant(vector, ir.Undefined),
                                        ir.Constant(ir.VectorType(ir.IntType(32), 64), [0] * 64))
        return builder.bitcast(builder.icmp_unsigned("<=", values, limits), ir.IntType(64))
    return types.uint64(coded, base, limit), codegen


@njit
def _lowest_bit(mask):
    """Position of the lowest set bit of a non-zero uint64."""
    return _popcount((mask & (~mask + np.uint64(1))) - np.uint64(1))


@njit
def _code_distances(q_words, db_words, coded):
    """coded[j] = 2 * Hamming distance (the low bit is left for relevance)."""
    if q_words.shape[0] == 1:  # codes of <= 64 bits: a loop LLVM vectorises
        for j in range(db_words.shape[0]):
            coded[j] = 2 * _popcount(q_words[0] ^ db_words[j, 0])
    else:
        for j in range(db_words.shape[0]):
            d = 0
            for w in range(q_words.shape[0]):
                d += _popcount(q_words[w] ^ db_words[j, w])
            coded[j] = 2 * d


@njit
def _add_relevance(q_label, db_labels, equal, coded):
    """Set the low bit of coded[j] when item j is relevant: equal labels, or else a common set bit."""
    if equal:
        for j in range(db_labels.shape[0]):
            coded[j] += q_label[0] == db_labels[j, 0]
    else:
        for j in range(db_labels.shape[0]):
            shared = 0
            for w in range(q_label.shape[0]):
                shared |= q_label[w] & db_labels[j, w]
            coded[j] += shared != 0


@njit
def _count_codes(coded, n, lanes, counts):
    """counts[c] = number of j < n with coded[j] == c. With many items per value, consecutive items count into
    separate rows of lanes (LANES x n_values), so runs of equal values do not wait on each other's increments."""
    counts[:] = 0
    if n < LANES * counts.shape[0]:
        for j in range(n):
            counts[coded[j]] += 1
        return
    lanes[:] = 0
    n_main = n - n % LANES
    for j in range(0, n_main, LANES):
        for lane in range(LANES):
            lanes[lane, coded[j + lane]] += 1
    for j in range(n_main, n):
        counts[coded[j]] += 1
    for lane in range(LANES):
        for c in range(counts.shape[0]):
            counts[c] += lanes[lane, c]


@njit
def _kth_distance_of_counts(counts, k):
    """Distance t of the k-th item (the smallest t with at least k items within distance t) from counts of the
    coded values."""
    t, within = 0, counts[0] + counts[1]
    while within < k:
        t += 1
        within += counts[2 * t] + counts[2 * t + 1]
    return t


@njit
def _count_within(coded, limit):
    """Number of items with coded value <= limit, 64 at a time."""
    n = 0
    for block in range(coded.shape[0] // 64):
        n += _popcount(_mask_within(coded, block * 64, limit))
    return n


@njit
def _kth_distance(coded, k, guess, n_bits):
    """Distance t of the k-th item without a histogram: from a guess (the thread's previous query), steps of
    doubling length bracket t, bisection finds it; usually two counts."""
    t = min(guess, n_bits)
    if _count_within(coded, 2 * t + 1) >= k:
        hi, step = t, 1  # at least k items within distance hi, fewer within lo
        lo = hi - step
        while lo >= 0 and _count_within(coded, 2 * lo + 1) >= k:
            hi, step = lo, 2 * step
            lo = hi - step
        lo = max(lo, -1)
    else:
        lo, step = t, 1
        hi = lo + step
        while hi < n_bits and _count_within(coded, 2 * hi + 1) < k:
            lo, step = hi, 2 * step
            hi = lo + step
        hi = min(hi, n_bits)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if _count_within(coded, 2 * mid + 1) >= k:
            hi = mid
        else:
            lo = mid
    return hi


@njit
def _collect_top_k(coded, k, t, top):
    """top[:k] = the indices of the top k in index order: the items closer than t and the first k - (number closer)
    items at distance t, found 64 at a time from masks."""
    room_at_t = k - (_count_within(coded, 2 * t - 1) if t > 0 else 0)
    n = 0
    for block in range(coded.shape[0] // 64):  # (a range with a step compiles to a much slower loop here)
        if n == k:
            break
        base = block * 64
        mask = _mask_within(coded, base, 2 * t - 1) if t > 0 else np.uint64(0)
        at_t = _mask_within(coded, base, 2 * t + 1) & ~mask
        if _popcount(at_t) > room_at_t:  # the last items at distance t that fit: the lowest room_at_t of them
            fitting = np.uint64(0)
            for _ in range(room_at_t):
                fitting |= at_t & (~at_t + np.uint64(1))
                at_t &= at_t - np.uint64(1)
            at_t = fitting
        mask |= at_t
        room_at_t -= _popcount(at_t)
        if mask == ~np.uint64(0):  # a full block: a loop LLVM vectorises
            for u in range(64):
                top[n + u] = base + u
            n += 64
            continue
        while mask:
            top[n] = base + _lowest_bit(mask)
            n += 1
            mask &= mask - np.uint64(1)


@njit
def _count_top_k(coded, top, k, t, counts):
    """counts[c] = number of top-k items with coded value c, for c <= 2t + 1."""
    counts[:2 * t + 2] = 0
    for x in range(k):
        counts[coded[top[x]]] += 1


@njit
def _first_ranks(counts, t, next_rank, next_hit):
    """next_rank[d] = number of items closer than d (the 0-based rank of the first item at distance d) and
    next_hit[d] = number of relevant ones among them, for d <= t, from counts of coded values below 2t."""
    closer, hits_closer = 0, 0
    for d in range(t + 1):
        next_rank[d], next_hit[d] = closer, hits_closer
        closer += counts[2 * d] + counts[2 * d + 1]
        hits_closer += counts[2 * d + 1]


@njit
def _average_precision_at_k(coded, top, k, next_rank, next_hit, inverse_rank):
    """(AP@k, relevant items in the top k): in index order, a top-k item at distance d takes rank next_rank[d]
    (0-based) and, if relevant, hit number next_hit[d] (1-based), adding hits / rank to the AP sum
    (inverse_rank[r] = 1 / (r + 1): a division per item would bound the loop)."""
    ap, hits = 0.0, 0
    for x in range(k):
        c = coded[top[x]]
        d, relevant = c >> 1, c & 1
        rank = next_rank[d]
        next_rank[d] = rank + 1
        next_hit[d] += relevant
        hits += relevant
        ap += relevant * next_hit[d] * inverse_rank[rank]
    return (ap / hits if hits > 0 else 0.0), hits


@njit
def _count_within_t(coded, t, counts):
    """counts[c] = number of items (whole database) with coded value c, for c <= 2t + 1, 64 at a time."""
    counts[:2 * t + 2] = 0
    for block in range(coded.shape[0] // 64):
        base = block * 64
        mask = _mask_within(coded, base, 2 * t + 1)
        while mask:
            counts[coded[base + _lowest_bit(mask)]] += 1
            mask &= mask - np.uint64(1)


@njit
def _position_sums(m, n, inverse_rank):
    """(sum_j 1 / (m + j), sum_j (j - 1) / (m + j)) over j = 1..n: the ranks of a tie group after m items."""
    a, b = 0.0, 0.0
    for j in range(n):
        a += inverse_rank[m + j]
        b += j * inverse_rank[m + j]
    return a, b


@njit
def _group_ap_sum(h, n, rel, a, b):
    """Expected sum over the relevant items of a tie group (n items, rel relevant, in uniformly random order, after
    items holding h hits; a, b from _position_sums) of hits / rank: the item at group position j is relevant with
    probability rel / n, and then hits = h + 1 + (j - 1)(rel - 1)/(n - 1) in expectation (He et al., CVPR 2018)."""
    if rel == 0:
        return 0.0
    spread = (rel - 1) / (n - 1) if n > 1 else 0.0
    return rel / n * ((h + 1) * a + spread * b)


@njit
def _expected_ap_at_k(counts, t, k, inverse_rank):
    """(expected AP@k, expected hits@k) over all orders of the items tied at each distance, from the counts of the
    coded values <= 2t + 1 over the whole database (t: distance of the k-th item). The groups closer than t lie
    wholly in the top k, independently ordered: their expected hits / rank sum s is a sum over groups. Of the group
    at t, the first kk = k - (items closer) are in the top k; the number r of relevant among them is hypergeometric,
    and given r they sit at uniformly random positions, so E[AP] = sum_r P(r) (s + cut sum | r) / (hits closer + r),
    an order without a hit counting 0. P(r) follows from ratios of successive terms, from the mode outwards."""
    m, h, s = 0, 0, 0.0
    for d in range(t):
        n, rel = counts[2 * d] + counts[2 * d + 1], counts[2 * d + 1]
        if rel > 0:
            a, b = _position_sums(m, n, inverse_rank)
            s += _group_ap_sum(h, n, rel, a, b)
        m += n
        h += rel
    n, rel, kk = counts[2 * t] + counts[2 * t + 1], counts[2 * t + 1], k - m
    hits = h + kk * rel / n
    if rel == 0:
        return (s / h if h > 0 else 0.0), hits
    a, b = _position_sums(m, kk, inverse_rank)
    r_lo, r_hi = max(0, kk - (n - rel)), min(rel, kk)
    mode = min(max((kk + 1) * (rel + 1) // (n + 2), r_lo), r_hi)
    total, weighted, w = 0.0, 0.0, 1.0
    for r in range(mode, r_hi + 1):  # w = P(r) / P(mode)
        if h + r > 0:
            weighted += w * (s + _group_ap_sum(h, kk, r, a, b)) / (h + r)
        total += w
        w *= (rel - r) * (kk - r) / ((r + 1.0) * (n - rel - kk + r + 1))
    w = 1.0
    for r in range(mode - 1, r_lo - 1, -1):
        w *= (r + 1.0) * (n - rel - kk + r + 1) / ((rel - r) * (kk - r))
        if h + r > 0:
            weighted += w * (s + _group_ap_sum(h, kk, r, a, b)) / (h + r)
        total += w
    return weighted / total, hits


@njit(cache=True)
def _scan_query(q_words, q_label, db_words, db_labels, equal, k, histograms, expected, guess, coded, lanes, counts,
                top, next_rank, next_hit, inverse_rank):
    """(AP@k, hits@k, expected AP@k, expected hits@k, k-th distance) of one query; k = 0 skips AP. With histograms,
    counts receives the counts of all coded values and both APs are computed; without, the stable one or (expected)
    the expected one."""
    _code_distances(q_words, db_words, coded)
    _add_relevance(q_label, db_labels, equal, coded)
    if histograms:
        _count_codes(coded, db_words.shape[0], lanes, counts)
    if k == 0:
        return 0.0, 0, 0.0, 0.0, guess
    ap_expected, hits_expected = 0.0, 0.0
    if histograms:
        t = _kth_distance_of_counts(counts, k)
        ap_expected, hits_expected = _expected_ap_at_k(counts, t, k, inverse_rank)
        _collect_top_k(coded, k, t, top)
    else:
        t = _kth_distance(coded, k, guess, next_rank.shape[0] - 1)
        if expected:
            _count_within_t(coded, t, counts)
            ap_expected, hits_expected = _expected_ap_at_k(counts, t, k, inverse_rank)
            return 0.0, 0, ap_expected, hits_expected, t
        _collect_top_k(coded, k, t, top)
        _count_top_k(coded, top, k, t, counts)
    _first_ranks(counts, t, next_rank, next_hit)
    ap, hits = _average_precision_at_k(coded, top, k, next_rank, next_hit, inverse_rank)
    return ap, hits, ap_expected, hits_expected, t


@njit(parallel=True, cache=True)
def _scan_queries(q_words, q_labels, db_words, db_labels, equal, k, histograms, expected, inverse_rank, buffers,
                  outputs):
    """Fill outputs = (AP@k, hits@k, expected AP@k, expected hits@k, histograms of the distances of relevant and of
    all items) per query; thread number `thread` takes queries thread, thread + n_threads, ... and row `thread` of
    the buffers. (All allocation is left to the caller: numba turns each array expression of a parallel function
    into a parallel loop of its own, each costing seconds of compilation.)"""
    coded, lanes, counts, top, next_rank, next_hit = buffers
    ap, hits, ap_expected, hits_expected, hist_rel, hist_all = outputs
    n_threads, n_db, n_bits = coded.shape[0], db_words.shape[0], next_rank.shape[1] - 65
    n_values = 2 * n_bits + 2
    for thread in prange(n_threads):
        t = n_bits // 2  # first guess of the k-th distance (a variable: a literal 0 would compile twice)
        for i in range(thread, q_words.shape[0], n_threads):
            ap[i], hits[i], ap_expected[i], hits_expected[i], t = _scan_query(
                q_words[i], q_labels[i], db_words, db_labels, equal, k, histograms, expected, t,
                coded[thread, :-(-n_db // 64) * 64], lanes[thread, :lanes.shape[1] - 64].reshape((-1, n_values)),
                counts[thread, :n_values], top[thread, :k], next_rank[thread, :n_bits + 1],
                next_hit[thread, :n_bits + 1], inverse_rank)
            if histograms:
                for d in range(n_bits + 1):
                    hist_rel[i, d] = counts[thread, 2 * d + 1]
                    hist_all[i, d] = counts[thread, 2 * d] + counts[thread, 2 * d + 1]


@njit(cache=True)
def _topk_query(q_words, db_words, k, guess, coded, top, counts, next_rank, next_hit, indices, distances):
    """Fill indices and distances (length k) with the k nearest items of one query in the stable order; returns the
    k-th distance."""
    _code_distances(q_words, db_words, coded)
    t = _kth_distance(coded, k, guess, next_rank.shape[0] - 1)
    _collect_top_k(coded, k, t, top)
    _count_top_k(coded, top, k, t, counts)
    _first_ranks(counts, t, next_rank, next_hit)
    for x in range(k):
        d = coded[top[x]] >> 1
        indices[next_rank[d]] = top[x]
        distances[next_rank[d]] = d
        next_rank[d] += 1
    return t


@njit(parallel=True, cache=True)
def _topk_queries(q_words, db_words, k, buffers, indices, distances):
    """Fill indices and distances (Q x k), threads and buffers as in _scan_queries."""
    coded, _, counts, top, next_rank, next_hit = buffers
    n_threads, n_db, n_bits = coded.shape[0], db_words.shape[0], next_rank.shape[1] - 65
    for thread in prange(n_threads):
        t = n_bits // 2
        for i in range(thread, q_words.shape[0], n_threads):
            t = _topk_query(q_words[i], db_words, k, t, coded[thread, :-(-n_db // 64) * 64], top[thread, :k],
                            counts[thread, :2 * n_bits + 2], next_rank[thread, :n_bits + 1],
                            next_hit[thread, :n_bits + 1], indices[i], distances[i])


def _thread_buffers(n_db: int, n_bits: int, k: int, histograms: bool) -> tuple:
    """Work arrays of the kernels, one row per thread: coded values (padded to whole blocks of 64), histogram lanes,
    counts, top-k indices, next ranks and hits. Each row is followed by 64 unused values so that no two threads
    write to one cache line (else the histograms run several times slower)."""
    def rows(n, dtype, fill=0):
        return np.full((numba.get_num_threads(), n + 64), fill, dtype)
    n_values = 2 * n_bits + 2
    return (rows(-(-n_db // 64) * 64, np.uint16, PAD), rows(LANES * n_values if histograms else 0, np.int32),
            rows(n_values, np.int64), rows(k, np.int32), rows(n_bits + 1, np.int64), rows(n_bits + 1, np.int64))


# ---------------------------------------------------------------------------------------------------- metrics

def hamming_topk(query_codes, db_codes, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(indices int64 Q x k, distances int32 Q x k) of the k nearest database items, ordered by (distance, index)."""
    q, db = _packed_pair(query_codes, db_codes)
    if not 1 <= k <= len(db.words):
        raise ValueError(f"k must be in 1..{len(db.words)} (database size), got {k}")
    indices, distances = np.empty((len(q.words), k), np.int64), np.empty((len(q.words), k), np.int32)
    _topk_queries(q.words, db.words, int(k), _thread_buffers(len(db.words), q.n_bits, k, False), indices, distances)
    return indices, distances


def _scan_chunks(query_codes, db_codes, query_labels, db_labels, k: int, relevance: str, histograms: bool,
                 expected: bool = False) -> Iterator[tuple[np.ndarray, ...]]:
    """(AP@k, hits@k, expected AP@k, expected hits@k, histogram of relevant distances, histogram of all distances)
    per query, CHUNK_SIZE queries at a time. With histograms every output is filled; without, the histograms are
    Q x 0 and only the stable AP and hits or (expected) only the expected ones are (the others are 0)."""
    q, db = _packed_pair(query_codes, db_codes)
    q_labels, db_labels, equal = _label_rows(query_labels, db_labels, len(q.words), len(db.words), relevance)
    buffers = _thread_buffers(len(db.words), q.n_bits, k, histograms)
    inverse_rank = 1.0 / np.arange(1, k + 1)
    n_hist = q.n_bits + 1 if histograms else 0
    for s in range(0, len(q.words), CHUNK_SIZE):
        n = min(CHUNK_SIZE, len(q.words) - s)
        outputs = (np.zeros(n), np.zeros(n, np.int64), np.zeros(n), np.zeros(n), np.zeros((n, n_hist), np.int64),
                   np.zeros((n, n_hist), np.int64))
        _scan_queries(q.words[s:s + n], q_labels[s:s + n], db.words, db_labels, equal, k, histograms, expected,
                      inverse_rank, buffers, outputs)
        yield outputs


def _safe_divide(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """a / b elementwise, 0 where b == 0."""
    return np.divide(a, b, out=np.zeros(np.broadcast(a, b).shape), where=b > 0)


def _metrics(query_codes, db_codes, query_labels, db_labels, k: int, relevance: str, radius: int = 2) -> dict:
    """All metrics from one scan, the top-k ones for both tie rules (suffix _index: stable order; _expected: the
    expectation over the orders of tied items). k = 0 skips AP and precision/recall@k. Conventions: mAP averages
    the queries with a relevant item in the top k (for _expected: in the top k of some order); recall (at k and on
    the curve) averages the queries with a relevant item in the database; precision within a radius and on the
    curve counts an empty retrieval as precision 0 and averages all queries."""
    sums = dict.fromkeys(["ap_index", "n_ap_index", "hits_index", "recall_index", "ap_expected", "n_ap_expected",
                          "hits_expected", "recall_expected", "precision_radius", "n_query", "n_with_relevant",
                          "curve_precision", "curve_recall"], 0.0)
    for ap, hits, ap_e, hits_e, hist_rel, hist_all in _scan_chunks(query_codes, db_codes, query_labels, db_labels,
                                                                   k, relevance, histograms=True):
        cum_rel, cum_all = np.cumsum(hist_rel, axis=1), np.cumsum(hist_all, axis=1)
        n_relevant = cum_rel[:, -1]
        r = min(radius, hist_all.shape[1] - 1)
        for ties, a, h in (("index", ap, hits), ("expected", ap_e, hits_e)):
            sums[f"ap_{ties}"] += a[h > 0].sum()
            sums[f"n_ap_{ties}"] += np.count_nonzero(h > 0)
            sums[f"hits_{ties}"] += h.sum()
            sums[f"recall_{ties}"] += _safe_divide(h, n_relevant).sum()
        sums["precision_radius"] += _safe_divide(cum_rel[:, r], cum_all[:, r]).sum()
        sums["curve_precision"] += _safe_divide(cum_rel, cum_all).sum(0)
        sums["curve_recall"] += _safe_divide(cum_rel, n_relevant[:, None]).sum(0)
        sums["n_query"] += len(ap)
        sums["n_with_relevant"] += np.count_nonzero(n_relevant)
    n_query, n_with_relevant = sums["n_query"], sums["n_with_relevant"]
    out = {}
    for ties in ("index", "expected"):
        n_ap = sums[f"n_ap_{ties}"]
        out[f"map_{ties}"] = sums[f"ap_{ties}"] / n_ap if n_ap else 0.0
        out[f"precision_at_k_{ties}"] = sums[f"hits_{ties}"] / (k * n_query) if k else 0.0
        out[f"recall_at_k_{ties}"] = sums[f"recall_{ties}"] / n_with_relevant if n_with_relevant else 0.0
    curve_precision = sums["curve_precision"]
    return out | {"precision_r2": sums["precision_radius"] / n_query, "pr_precision": curve_precision / n_query,
                  "pr_recall": (sums["curve_recall"] / n_with_relevant if n_with_relevant
                                else np.zeros_like(curve_precision))}


def _n_db(db_codes) -> int:
    return len(db_codes.words) if isinstance(db_codes, PackedCodes) else len(db_codes)


def _checked_k(k: int, n_db: int) -> int:
    if not 1 <= k <= n_db:
        raise ValueError(f"k must be in 1..{n_db} (database size), got {k}")
    return int(k)


def _topk_or_all(topk: int | None, n_db: int) -> int:
    """k of mAP@topk: None or topk >= N means the whole database (as slicing the ranking does in the paper repo)."""
    if topk is not None and topk < 1:
        raise ValueError(f"topk must be None or >= 1, got {topk}")
    return n_db if topk is None else min(int(topk), n_db)


def _checked_ties(ties: str) -> str:
    if ties not in TIES:
        raise ValueError(f"ties must be one of {', '.join(TIES)}, got {ties!r}")
    return ties


def mean_average_precision(query_codes, db_codes, query_labels, db_labels, topk: int | None = None,
                           relevance: str = "label", ties: str = "index") -> float:
    """mAP@topk (the paper repo's AP): AP = sum over relevant ranks r <= topk of (hits up to r) / r, divided by the
    hits in the top k; queries without a relevant item in the top k are skipped. topk None (or >= N) = whole db.
    ties="index" ranks tied items by database index (stable order); ties="expected" gives the exact expectation
    of AP@k over all orders of the items tied at each distance (He et al., "Hashing as Tie-Aware Learning to Rank",
    CVPR 2018), an order without a hit in the top k counting 0 and a query skipped only when no order has one."""
    k = _topk_or_all(topk, _n_db(db_codes))
    expected = _checked_ties(ties) == "expected"
    ap_sum = n_counted = 0
    for ap, hits, ap_e, hits_e, _, _ in _scan_chunks(query_codes, db_codes, query_labels, db_labels, k, relevance,
                                                     histograms=False, expected=expected):
        if expected:
            ap, hits = ap_e, hits_e
        ap_sum += ap[hits > 0].sum()
        n_counted += np.count_nonzero(hits)
    return float(ap_sum / n_counted) if n_counted else 0.0


def precision_recall_at_k(query_codes, db_codes, query_labels, db_labels, k: int, ties: str = "index"
                          ) -> tuple[float, float]:
    """(mean over queries of relevant-in-top-k / k, mean over queries with a relevant item of
    relevant-in-top-k / relevant-in-db); ties="expected" averages relevant-in-top-k over the orders of tied items."""
    ties = _checked_ties(ties)
    m = _metrics(query_codes, db_codes, query_labels, db_labels, _checked_k(k, _n_db(db_codes)), "label")
    return float(m[f"precision_at_k_{ties}"]), float(m[f"recall_at_k_{ties}"])


def precision_within_radius(query_codes, db_codes, query_labels, db_labels, radius: int = 2) -> float:
    """Mean over queries of the precision of the items within Hamming distance <= radius (0 if none retrieved)."""
    if radius < 0:
        raise ValueError(f"radius must be >= 0, got {radius}")
    return float(_metrics(query_codes, db_codes, query_labels, db_labels, 0, "label", radius)["precision_r2"])


def pr_curve(query_codes, db_codes, query_labels, db_labels) -> tuple[np.ndarray, np.ndarray]:
    """(precision, recall), each of length L + 1: entry r retrieves every item within Hamming distance <= r.
    Precision of an empty retrieval counts as 0 (mean over all queries); recall is averaged over the queries with
    at least one relevant database item."""
    m = _metrics(query_codes, db_codes, query_labels, db_labels, 0, "label")
    return m["pr_precision"], m["pr_recall"]


def evaluate_codes(query_codes, db_codes, query_labels, db_labels, topk: int | None,
                   relevance: str = "label", ties: str = "index") -> dict:
    """{"map", "map_index", "map_expected", "precision_at_k", "recall_at_k", "precision_r2", "pr_precision",
    "pr_recall"} from one scan; k = topk (None or >= N: the whole database). "map", "precision_at_k" and
    "recall_at_k" follow `ties` (see mean_average_precision); map_index and map_expected are both tie rules'."""
    ties = _checked_ties(ties)
    m = _metrics(query_codes, db_codes, query_labels, db_labels, _topk_or_all(topk, _n_db(db_codes)), relevance)
    out = {"map": m[f"map_{ties}"], "map_index": m["map_index"], "map_expected": m["map_expected"],
           "precision_at_k": m[f"precision_at_k_{ties}"], "recall_at_k": m[f"recall_at_k_{ties}"],
           "precision_r2": m["precision_r2"], "pr_precision": m["pr_precision"], "pr_recall": m["pr_recall"]}
    return {key: (float(v) if np.ndim(v) == 0 else v) for key, v in out.items()}
