"""The byte-bounded LRU: a global bound, a per-owner quota, and forgetting an owner."""

from __future__ import annotations

import threading

from explorer.interpret.cache import CACHE_OWNER, ByteLRU, cache_owner


def sized(n: int) -> bytes:
    return b"x" * n


def test_global_bound_evicts_least_recently_used():
    lru: ByteLRU[bytes] = ByteLRU(300, len)
    lru.put("a", sized(100))
    lru.put("b", sized(100))
    lru.put("c", sized(100))
    assert lru.get("a") is not None  # a is now the most recent
    lru.put("d", sized(100))
    assert "b" not in lru and all(k in lru for k in "acd")
    assert lru.nbytes == 300


def test_an_owner_over_its_quota_evicts_its_own_entries_not_others():
    lru: ByteLRU[bytes] = ByteLRU(10_000, len, max_bytes_per_owner=250)
    lru.put("other-1", sized(100), owner="bob")
    lru.put("other-2", sized(100), owner="bob")
    for i in range(10):
        lru.put(f"alice-{i}", sized(100), owner="alice")
    assert "other-1" in lru and "other-2" in lru
    assert lru.owner_bytes("alice") == 200
    assert [f"alice-{i}" in lru for i in range(10)] == [False] * 8 + [True, True]
    assert lru.owner_bytes("bob") == 200
    assert lru.nbytes == 400


def test_an_entry_bigger_than_the_quota_is_not_stored():
    lru: ByteLRU[bytes] = ByteLRU(1000, len, max_bytes_per_owner=50)
    lru.put("big", sized(60), owner="alice")
    assert "big" not in lru and lru.nbytes == 0
    lru.put("big", sized(60))  # unowned entries are bounded only globally
    assert "big" in lru


def test_owner_comes_from_the_context_and_can_be_dropped():
    lru: ByteLRU[bytes] = ByteLRU(10_000, len, max_bytes_per_owner=1000)
    with cache_owner("s1"):
        lru.put("k1", sized(10))
        seen: list[str | None] = []
        t = threading.Thread(target=lambda: seen.append(CACHE_OWNER.get()))
        t.start()
        t.join()
    lru.put("k2", sized(20))
    assert CACHE_OWNER.get() is None and seen == [None]  # plain threads do not inherit it
    assert lru.owner_bytes("s1") == 10 and lru.owner_bytes(None) == 20
    assert lru.drop_owner("s1") == 1
    assert "k1" not in lru and "k2" in lru and lru.nbytes == 20


def test_replacing_a_key_moves_its_bytes_to_the_new_owner():
    lru: ByteLRU[bytes] = ByteLRU(10_000, len, max_bytes_per_owner=1000)
    lru.put("k", sized(10), owner="a")
    lru.put("k", sized(30), owner="b")
    assert lru.owner_bytes("a") == 0 and lru.owner_bytes("b") == 30 and lru.nbytes == 30
