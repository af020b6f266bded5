"""Co-occurrence table: hand-computed PMI, lift and support, the order rule, sampling, files, cart scores."""

from __future__ import annotations

import itertools
import math
from pathlib import Path

import numpy as np
import polars as pl
import pytest

import basketcast.pipeline.model.cooccurrence as cooccurrence
from basketcast.pipeline.data import schema as S
from basketcast.pipeline.model.cooccurrence import LIFT, PMI, SUPPORT, Cooccurrence


def _lines(baskets: list[list[int]], users: int = 2) -> pl.DataFrame:
    """USER, ORDER_NUMBER, PRODUCT lines; basket i belongs to user i % users, order number i // users + 1.

    The same order number recurs across users, so a basket must be told apart by (user, order number).
    """
    rows = [(i % users + 1, i // users + 1, product) for i, basket in enumerate(baskets) for product in basket]
    return pl.DataFrame(rows, schema={S.USER: pl.UInt32, S.ORDER_NUMBER: pl.UInt16, S.PRODUCT: pl.UInt32}, orient="row")


# N = 6 baskets; n(1) = n(2) = n(3) = n(4) = 3, n(5) = 1.
# Pairs: (1,2) 3 baskets, (3,4) 2, (1,3) (2,3) (1,4) (2,4) 1 each.
# lift(1,2) = 3·6/(3·3) = 2; lift(3,4) = 2·6/(3·3) = 4/3; the others 1·6/9 = 2/3 (PMI < 0: dropped).
SMALL = _lines([[1, 2, 3], [1, 2], [1, 2, 4], [3, 4], [3, 4], [5]])


def _as_dict(table: Cooccurrence) -> dict[int, list[tuple[int, float, float, int]]]:
    """{product: [(related, pmi, lift, support), ...]} in stored order."""
    out = {}
    for product in table.products.tolist():
        out[product] = [tuple(row) for row in table.related_to(product, k=10_000).iter_rows()]
    return out


def test_pmi_lift_support_by_hand() -> None:
    table = Cooccurrence.of(SMALL, min_support=1)
    assert table.n_orders == 6
    assert table.products.tolist() == [1, 2, 3, 4]
    assert table.offsets.tolist() == [0, 1, 2, 3, 4]
    assert table.related.tolist() == [2, 1, 4, 3]
    np.testing.assert_allclose(table.lift, [2.0, 2.0, 4 / 3, 4 / 3], rtol=1e-6)
    np.testing.assert_allclose(table.pmi, np.log([2.0, 2.0, 4 / 3, 4 / 3]), rtol=1e-6)
    assert table.support.tolist() == [3, 3, 2, 2]
    assert (table.products.dtype, table.offsets.dtype, table.related.dtype) == (np.uint32, np.int64, np.uint32)
    assert (table.pmi.dtype, table.lift.dtype, table.support.dtype) == (np.float32, np.float32, np.uint32)


def test_min_support_filters_pairs() -> None:
    assert Cooccurrence.of(SMALL, min_support=2).related.tolist() == [2, 1, 4, 3]
    three = Cooccurrence.of(SMALL, min_support=3)
    assert three.products.tolist() == [1, 2]
    assert three.related.tolist() == [2, 1]
    assert Cooccurrence.of(SMALL, min_support=4).products.size == 0


# N = 10; n(10) = 4, n(11) = n(12) = n(13) = 2, n(99) = 4.
# lift(10,13) = 2·10/(4·2) = 2.5; lift(10,11) = lift(10,12) = 1·10/(4·2) = 1.25 (a tie).
# Every other pair is absent. So 10's list is 13, then 11 and 12 tied on PMI: 11 first (smaller id).
ORDERED = _lines([[10, 13], [10, 13], [10, 11], [10, 12], [11], [12], [99], [99], [99], [99]], users=3)


def test_order_rule_and_top_truncation() -> None:
    full = Cooccurrence.of(ORDERED, min_support=1)
    got = _as_dict(full)
    assert [r[0] for r in got[10]] == [13, 11, 12]
    assert got[10][0][1] == pytest.approx(math.log(2.5), rel=1e-6)
    assert got[10][1][1] == got[10][2][1] == pytest.approx(math.log(1.25), rel=1e-6)
    assert [r[0] for r in got[11]] == [r[0] for r in got[12]] == [r[0] for r in got[13]] == [10]
    top2 = Cooccurrence.of(ORDERED, min_support=1, top=2)
    assert top2.related_to(10, k=10)[S.PRODUCT].to_list() == [13, 11]
    assert top2.related_to(12, k=10)[S.PRODUCT].to_list() == [10]  # 12's own list keeps 10
    top1 = Cooccurrence.of(ORDERED, min_support=1, top=1)
    assert top1.related.tolist() == [13, 10, 10, 10]
    assert full.related_to(10, k=2)[S.PRODUCT].to_list() == [13, 11]


def _brute_force(baskets: list[list[int]], min_support: int) -> dict[int, list[tuple[int, float, float, int]]]:
    """The table by plain Python: every positive-PMI pair with enough support, both directions, best first."""
    n = len(baskets)
    count: dict[int, int] = {}
    pair: dict[tuple[int, int], int] = {}
    for basket in baskets:
        for p in set(basket):
            count[p] = count.get(p, 0) + 1
        for a, b in itertools.permutations(sorted(set(basket)), 2):
            pair[a, b] = pair.get((a, b), 0) + 1
    out: dict[int, list[tuple[int, float, float, int]]] = {}
    for (a, b), c in pair.items():
        lift = c * n / (count[a] * count[b])
        if c >= min_support and math.log(lift) > 0:
            out.setdefault(a, []).append((b, math.log(lift), lift, c))
    return {a: sorted(rows, key=lambda r: (-r[1], r[0])) for a, rows in sorted(out.items())}


def _random_baskets(seed: int, n: int = 300, products: int = 25) -> list[list[int]]:
    rng = np.random.default_rng(seed)
    # Two "themes" make some pairs co-occur more than chance.
    themes = [np.arange(1, 13), np.arange(10, products + 1)]
    baskets = []
    for _ in range(n):
        pool = themes[int(rng.integers(2))]
        size = int(rng.integers(1, 7))
        baskets.append(sorted(rng.choice(pool, size=min(size, pool.size), replace=False).tolist()))
    return baskets


@pytest.mark.parametrize("chunk", [7, 1_000_000])
def test_matches_brute_force_in_one_or_many_chunks(monkeypatch: pytest.MonkeyPatch, chunk: int) -> None:
    monkeypatch.setattr(cooccurrence, "_CHUNK_PAIRS", chunk)
    baskets = _random_baskets(1)
    table = Cooccurrence.of(_lines(baskets, users=7), min_support=3, top=1_000)
    expected = _brute_force(baskets, 3)
    got = _as_dict(table)
    assert list(got) == list(expected)
    for product, rows in expected.items():
        assert [r[0] for r in got[product]] == [r[0] for r in rows]
        assert [r[3] for r in got[product]] == [r[3] for r in rows]
        np.testing.assert_allclose([r[1] for r in got[product]], [r[1] for r in rows], rtol=1e-5)
        np.testing.assert_allclose([r[2] for r in got[product]], [r[2] for r in rows], rtol=1e-5)


def test_symmetric() -> None:
    table = Cooccurrence.of(_lines(_random_baskets(2)), min_support=2, top=1_000)
    edges = {(a, b): (pmi, support) for a, rows in _as_dict(table).items() for b, pmi, _, support in rows}
    assert edges
    assert all(edges[b, a] == value for (a, b), value in edges.items())


def test_repeated_line_counts_once_and_row_order_does_not_matter() -> None:
    table = Cooccurrence.of(SMALL, min_support=1)
    doubled = pl.concat([SMALL, SMALL.head(2)]).sample(fraction=1.0, shuffle=True, seed=3)
    again = Cooccurrence.of(doubled, min_support=1)
    for name in ("products", "offsets", "related", "pmi", "lift", "support"):
        np.testing.assert_array_equal(getattr(again, name), getattr(table, name))


def test_sampling_is_seeded_and_uses_the_sample_for_probabilities() -> None:
    baskets = _random_baskets(4, n=400)
    lines = _lines(baskets, users=9)
    a = Cooccurrence.of(lines, min_support=2, max_orders=100, seed=5)
    b = Cooccurrence.of(lines.sample(fraction=1.0, shuffle=True, seed=1), min_support=2, max_orders=100, seed=5)
    c = Cooccurrence.of(lines, min_support=2, max_orders=100, seed=6)
    full = Cooccurrence.of(lines, min_support=2, max_orders=None)
    assert a.n_orders == c.n_orders == 100 and full.n_orders == 400
    for name in ("products", "offsets", "related", "pmi", "lift", "support"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
    assert not np.array_equal(a.support, c.support) or not np.array_equal(a.related, c.related)
    # A sample of 100 baskets: a pair is in at most as many sampled baskets as baskets overall.
    assert int(a.support.max()) <= int(full.support.max())
    # lift = support · N / (n(a) n(b)) with N the sample size: support · 100 ≥ lift, as n(a), n(b) ≥ 1.
    assert np.all(a.support.astype(np.float64) * 100 >= a.lift * (1 - 1e-6))
    assert Cooccurrence.of(lines, min_support=2, max_orders=400).n_orders == 400  # not more than there are


def test_sampled_probabilities_come_from_the_sample() -> None:
    # 50 baskets {1, 2} and 50 baskets {3}. If s of the 20 sampled baskets are {1, 2}:
    # n(1) = n(2) = n(1,2) = s, so lift = s·20/(s·s) = 20/s (with the full N it would be 100/s).
    table = Cooccurrence.of(_lines([[1, 2]] * 50 + [[3]] * 50, users=4), min_support=1, max_orders=20, seed=2)
    s = int(table.support[0])
    assert 0 < s < 20
    assert table.related.tolist() == [2, 1]
    np.testing.assert_allclose(table.lift, [20 / s, 20 / s], rtol=1e-6)


def test_save_load_round_trip(tmp_path: Path) -> None:
    table = Cooccurrence.of(_lines(_random_baskets(5)), min_support=2, top=3, max_orders=250, seed=9)
    table.save(tmp_path / "cooc")
    loaded = Cooccurrence.load(tmp_path / "cooc")
    assert (loaded.n_orders, loaded.min_support, loaded.top, loaded.max_orders, loaded.seed) == (250, 2, 3, 250, 9)
    for name in ("products", "offsets", "related", "pmi", "lift", "support"):
        np.testing.assert_array_equal(getattr(loaded, name), getattr(table, name))
        assert getattr(loaded, name).dtype == getattr(table, name).dtype
    product = int(table.products[0])
    assert loaded.related_to(product, 5).equals(table.related_to(product, 5))
    cart, candidates = table.products[:3], table.related[:20]
    np.testing.assert_array_equal(loaded.cart_scores(cart, candidates), table.cart_scores(cart, candidates))


def test_related_to_unknown_product_is_empty() -> None:
    table = Cooccurrence.of(SMALL, min_support=1)
    for product in (5, 777):  # 5 is bought but relates to nothing; 777 never seen
        out = table.related_to(product)
        assert out.height == 0
        assert out.schema == pl.Schema({S.PRODUCT: pl.UInt32, PMI: pl.Float32, LIFT: pl.Float32, SUPPORT: pl.UInt32})


def test_cart_scores_by_hand() -> None:
    table = Cooccurrence.of(SMALL, min_support=1)  # 1↔2 PMI ln 2, 3↔4 PMI ln 4/3
    ln2, ln43 = math.log(2.0), math.log(4 / 3)
    got = table.cart_scores(np.array([1, 3], dtype=np.uint32), np.array([2, 4, 1, 5, 2, 3], dtype=np.uint32))
    assert got.dtype == np.float32
    # Mean over the 2 cart products; cart products (1, 3) score 0; 5 relates to nothing; 2 repeated.
    np.testing.assert_allclose(got, [ln2 / 2, ln43 / 2, 0.0, 0.0, ln2 / 2, 0.0], rtol=1e-6)
    # An unknown cart product counts in the mean with PMI 0; a repeated cart product counts once.
    np.testing.assert_allclose(table.cart_scores(np.array([1, 777, 1]), np.array([2])), [ln2 / 2], rtol=1e-6)
    np.testing.assert_allclose(table.cart_scores(np.array([2]), np.array([1, 3])), [ln2, 0.0], rtol=1e-6)
    assert table.cart_scores(np.array([], dtype=np.uint32), np.array([1, 2])).tolist() == [0.0, 0.0]
    assert table.cart_scores(np.array([1]), np.array([], dtype=np.uint32)).size == 0


def test_cart_scores_reads_only_the_cart_products_lists() -> None:
    table = Cooccurrence.of(ORDERED, min_support=1, top=1)  # 10: [13]; 11: [10]; 12: [10]; 13: [10]
    # 11 is not in 10's (cut) list, so PMI(10, 11) counts 0 from a cart {10}; from a cart {11} it counts.
    assert table.cart_scores(np.array([10]), np.array([11, 13])).tolist() == [0.0, pytest.approx(math.log(2.5))]
    assert table.cart_scores(np.array([11]), np.array([10])).tolist() == [pytest.approx(math.log(1.25))]


def test_parameters_are_checked() -> None:
    with pytest.raises(ValueError, match="min_support"):
        Cooccurrence.of(SMALL, min_support=0)
    with pytest.raises(ValueError, match="order_number"):
        Cooccurrence.of(SMALL.drop(S.ORDER_NUMBER))


def test_baskets_without_pairs_give_an_empty_table() -> None:
    """Three shoppers with one product per basket (a tiny real log): no pair, no crash."""
    lines = pl.DataFrame(
        {S.USER: [1, 1, 2, 3], S.ORDER_NUMBER: [1, 2, 1, 1], S.PRODUCT: [10, 10, 11, 12]},
        schema={S.USER: pl.UInt32, S.ORDER_NUMBER: pl.UInt16, S.PRODUCT: pl.UInt32},
    )
    table = Cooccurrence.of(lines, min_support=1)
    assert table.related.size == 0
    assert table.related_to(10).height == 0
    assert np.array_equal(table.cart_scores(np.array([10], np.uint32), np.array([11, 12], np.uint32)), [0.0, 0.0])
