"""The load-balancing policies on their own: weights, spread, consistent hashing."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from edgegw.balance.balancer import key_reader
from edgegw.balance.policy import Hash, LeastRequest, Random, RoundRobin, maglev_table


@dataclass(eq=False)
class M:
    key: str
    weight: int = 1
    active: int = 0


def test_round_robin_is_smooth_and_weighted() -> None:
    a, b, c = M("a", 5), M("b"), M("c")
    rr = RoundRobin([a, b, c])
    picks = [rr.pick(None).key for _ in range(70)]
    assert Counter(picks) == {"a": 50, "b": 10, "c": 10}
    assert "aaaaa" not in "".join(picks)  # spread out (a a b a c a a), never five in a row


def test_random_follows_weights() -> None:
    a, b = M("a", 3), M("b", 1)
    counts = Counter(Random([a, b]).pick(None).key for _ in range(4000))
    assert 2700 < counts["a"] < 3300


def test_least_request_prefers_fewer_in_flight() -> None:
    busy, idle = M("busy", active=10), M("idle")
    policy = LeastRequest([busy, idle])
    assert {policy.pick(None).key for _ in range(200)} == {"idle"}


def test_hash_is_stable_and_moves_about_one_in_n() -> None:
    members = [M(f"http://u-{i}:80@10.0.0.{i}") for i in range(5)]
    before = Hash(members)
    keys = [f"user-{i}".encode() for i in range(3000)]
    first = {k: before.pick(k).key for k in keys}
    again = Hash(members)  # as another worker builds it
    assert all(again.pick(k).key == first[k] for k in keys)
    after = Hash(members[:2] + members[3:])  # one of five leaves
    moved = [k for k in keys if after.pick(k).key != first[k]]
    gone = members[2].key
    share = len(moved) / len(keys)
    assert 0.15 < share < 0.27, share  # ~1/5: the departed endpoint's keys, barely more
    stayed = sum(1 for k in keys if first[k] != gone and after.pick(k).key == first[k])
    assert stayed / sum(1 for k in keys if first[k] != gone) > 0.95


def test_maglev_table_shares_slots_by_weight() -> None:
    table = maglev_table(["a", "b", "c"], [1, 1, 2], size=5003)
    counts = Counter(table)
    assert sum(counts.values()) == 5003
    assert abs(counts[2] - 2 * counts[0]) < 50


def test_hash_keys_from_header_cookie_and_peer() -> None:
    headers = [
        (b"x-user-id", b"u1"),
        (b"cookie", b"a=1; session=abc"),
        (b"cookie", b"late=2"),
        (b"x-forwarded-for", b"203.0.113.9, 198.51.100.7"),  # the gateway appended the peer
    ]
    header, cookie = key_reader("header:x-user-id"), key_reader("cookie:session")
    late, ip = key_reader("cookie:late"), key_reader("ip")
    assert header and cookie and late and ip
    assert (header(headers), cookie(headers), late(headers)) == (b"u1", b"abc", b"2")
    assert ip(headers) == b"198.51.100.7"  # the connecting peer, not a forgeable hop
    missing = key_reader("cookie:missing")
    assert missing is not None and missing(headers) is None
    assert key_reader(None) is None
