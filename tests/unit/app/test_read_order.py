"""A source partition's offsets: skip what the lake has, never jump a hole silently."""

from __future__ import annotations

from app.read_order import GAP_SEEKS, GAP_WAIT_S, ReadOrder, Verdict


def read_all(order: ReadOrder, offsets, now: float = 0.0) -> list[Verdict]:
    verdicts = []
    for offset in offsets:
        verdict = order.classify(offset, now)
        if verdict in (Verdict.NEW, Verdict.GAP_ACCEPTED):
            order.read(offset)
        verdicts.append(verdict)
    return verdicts


def test_in_order_records_after_the_lake_are_new():
    order = ReadOrder(skip_through=9, last_read=9)
    assert read_all(order, [8, 9, 10, 11]) == [
        Verdict.IN_LAKE,
        Verdict.IN_LAKE,
        Verdict.NEW,
        Verdict.NEW,
    ]
    assert order.last_read == 11


def test_records_read_before_come_back_as_again():
    order = ReadOrder(skip_through=-1, last_read=-1)
    read_all(order, range(5))
    assert read_all(order, [2, 3, 4, 5]) == [Verdict.AGAIN] * 3 + [Verdict.NEW]


def test_a_fresh_partition_may_start_past_zero():
    order = ReadOrder(skip_through=-1, last_read=-1)
    assert read_all(order, [1000, 1001]) == [Verdict.NEW, Verdict.NEW]


def test_a_hole_is_never_jumped_the_re_read_fills_it():
    # the run that lost offsets 2950-2951 from the lake: 2952 arrived after 2949
    order = ReadOrder(skip_through=2914, last_read=2949)
    assert order.classify(2952, 0.0) is Verdict.SEEK
    assert order.expected == 2950
    assert order.classify(2953, 0.1) is Verdict.AHEAD  # stale records, still queued
    assert read_all(order, [2950, 2951, 2952, 2953], now=0.2) == [Verdict.NEW] * 4
    assert order.last_read == 2953


def test_a_hole_right_after_the_lake_point_is_re_read_too():
    order = ReadOrder(skip_through=2914, last_read=2914)
    assert order.classify(2916, 0.0) is Verdict.SEEK


def test_a_hole_the_log_really_has_is_accepted_after_the_re_reads():
    # transaction markers or compaction: the offsets never come
    order = ReadOrder(skip_through=-1, last_read=99)
    now = 0.0
    verdicts = [order.classify(101, now)]
    for _ in range(GAP_SEEKS):
        now += GAP_WAIT_S / 2
        verdicts.append(order.classify(101, now))
        now += GAP_WAIT_S
        verdicts.append(order.classify(101, now))
    assert verdicts[0] is Verdict.SEEK
    assert verdicts.count(Verdict.SEEK) == GAP_SEEKS
    assert Verdict.AHEAD in verdicts
    assert verdicts[-1] is Verdict.GAP_ACCEPTED
    order.read(101)
    assert order.classify(102, now) is Verdict.NEW


def test_a_new_hole_starts_its_own_re_reads():
    order = ReadOrder(skip_through=-1, last_read=9)
    assert order.classify(12, 0.0) is Verdict.SEEK
    read_all(order, [10, 11, 12])
    assert order.classify(20, 0.5) is Verdict.SEEK  # not AHEAD: a different hole
