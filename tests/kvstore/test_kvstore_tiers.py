"""Global KV store: chained keys, LRU memory tier, checksummed disk tier, restart, corruption."""

from __future__ import annotations

import os
import threading
import time

import pytest
import torch

from llmplan.errors import LlmplanError
from llmplan.kvstore.disk import STALE_TMP_S, DiskTier
from llmplan.kvstore.hashing import block_hashes
from llmplan.kvstore.memory import MemoryTier
from llmplan.kvstore.store import GlobalKVStore


def _kv(seed: int, block: int = 4, dtype=torch.float32) -> torch.Tensor:
    return torch.randn(2, block, 2, 8, generator=torch.Generator().manual_seed(seed)).to(dtype)


def test_chained_hashes_share_exactly_the_common_prefix():
    a = block_hashes(list(range(12)), 4, "m")
    b = block_hashes(list(range(8)) + [99, 9, 10, 11], 4, "m")
    assert len(a) == 3 and a[:2] == b[:2] and a[2] != b[2]
    # Same tokens in block 1 after a different block 0: different key (the chain matters).
    c = block_hashes([7, 7, 7, 7] + list(range(4, 8)), 4, "m")
    assert c[1] != a[1]
    assert block_hashes(list(range(12)), 4, "other-model") != a
    assert block_hashes(list(range(11)), 4, "m") == a[:2]  # partial tail block has no key
    assert block_hashes([1, 23], 2) != block_hashes([12, 3], 2)


def test_memory_tier_is_lru_by_bytes():
    t = _kv(0)
    size = t.numel() * 4
    m = MemoryTier(capacity_bytes=3 * size)
    for i in range(3):
        m.put((bytes([i]), 0), _kv(i))
    assert m.get((bytes([0]), 0)) is not None  # touch 0 -> 1 is now LRU
    evicted = m.put((bytes([3]), 0), _kv(3))
    assert evicted == [(bytes([1]), 0)]
    assert m.used_bytes == 3 * size and len(m) == 3
    assert m.put((b"big", 0), torch.zeros(4 * size // 4)) == []  # larger than the tier: not cached
    assert (b"big", 0) not in m


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_disk_roundtrip_and_restart(tmp_path, dtype):
    keys = block_hashes(list(range(16)), 4, "m")
    store = GlobalKVStore(num_layers=2, memory_bytes=1 << 20, disk_dir=tmp_path)
    for i, k in enumerate(keys):
        for layer in range(2):
            store.put(k, layer, _kv(10 * i + layer, dtype=dtype))
    del store
    reopened = GlobalKVStore(num_layers=2, memory_bytes=1 << 20, disk_dir=tmp_path)  # "restart"
    assert reopened.match_prefix(keys) == 4
    for i, k in enumerate(keys):
        for layer in range(2):
            got = reopened.get(k, layer)
            assert got is not None and got.dtype == dtype
            assert torch.equal(got, _kv(10 * i + layer, dtype=dtype))
    s = reopened.stats()
    assert s.disk_hits == 8 and s.memory_hits == 0
    assert reopened.get(keys[0], 0) is not None and reopened.stats().memory_hits == 1  # promoted


def _only_file(tmp_path):
    files = [p for p in tmp_path.rglob("*.kvb")]
    assert len(files) == 1
    return files[0]


@pytest.mark.parametrize("damage", ["flip_payload", "flip_header", "flip_digest", "truncate", "empty"])
def test_corrupt_or_truncated_file_is_dropped_and_reported_as_a_miss(tmp_path, damage):
    key = block_hashes(list(range(4)), 4)[0]
    DiskTier(tmp_path).put((key, 0), _kv(1))
    path = _only_file(tmp_path)
    data = bytearray(path.read_bytes())
    if damage == "flip_payload":
        data[len(data) // 2 + 40] ^= 0x01
    elif damage == "flip_header":
        data[12] ^= 0x20
    elif damage == "flip_digest":
        data[-1] ^= 0xFF
    elif damage == "truncate":
        data = data[: len(data) - 7]
    else:
        data = bytearray()
    path.write_bytes(bytes(data))
    # After a restart: the file is still indexed, but never served.
    store = GlobalKVStore(num_layers=1, memory_bytes=0, disk_dir=tmp_path)
    assert store.match_prefix([key]) == 1
    assert store.get(key, 0) is None
    s = store.stats()
    assert s.corrupt_dropped == 1 and s.misses == 1
    assert not path.exists() and store.match_prefix([key]) == 0  # dropped: next time it is recomputed
    store.put(key, 0, _kv(1))  # recompute and store again
    assert torch.equal(store.get(key, 0), _kv(1))


def test_intact_file_with_wrong_name_is_not_served(tmp_path):
    """A valid file copied under another block's name (e.g. by hand) is rejected by its header."""
    k0, k1 = block_hashes(list(range(8)), 4)
    tier = DiskTier(tmp_path)
    tier.put((k0, 0), _kv(0))
    dst = tier.path((k1, 0))
    dst.parent.mkdir(exist_ok=True)
    os.replace(tier.path((k0, 0)), dst)
    reopened = DiskTier(tmp_path)
    assert (k1, 0) in reopened
    assert reopened.get((k1, 0)) is None and reopened.corrupt_dropped == 1


def test_stale_temporaries_are_swept_on_open(tmp_path):
    key = block_hashes(list(range(4)), 4)[0]
    tier = DiskTier(tmp_path)
    tier.put((key, 0), _kv(0))
    stale = tier.path((key, 0)).with_name("x.kvb.tmp.123.abcd")
    stale.write_bytes(b"half a write")
    old = time.time() - 2 * STALE_TMP_S
    os.utime(stale, (old, old))
    # Another process sharing the directory may be writing this one right now: it stays.
    fresh = tier.path((key, 0)).with_name("y.kvb.tmp.456.ef01")
    fresh.write_bytes(b"being written")
    DiskTier(tmp_path)
    assert not stale.exists()
    assert fresh.exists()


def test_disk_capacity_evicts_oldest(tmp_path):
    keys = block_hashes(list(range(40)), 4)
    tier = DiskTier(tmp_path, capacity_bytes=None)
    tier.put((keys[0], 0), _kv(0))
    one = tier.used_bytes
    tier = DiskTier(tmp_path / "cap", capacity_bytes=3 * one)
    for i, k in enumerate(keys[:5]):
        tier.put((k, 0), _kv(i))
    assert len(tier) == 3 and tier.evictions == 2
    assert (keys[0], 0) not in tier and (keys[4], 0) in tier
    assert len(list((tmp_path / "cap").rglob("*.kvb"))) == 3


def test_prefix_match_needs_every_layer(tmp_path):
    keys = block_hashes(list(range(12)), 4)
    store = GlobalKVStore(num_layers=2, memory_bytes=1 << 20)
    for k in keys:
        store.put(k, 0, _kv(0))
    store.put(keys[0], 1, _kv(0))
    assert store.match_prefix(keys) == 1


def test_shared_by_concurrent_prefill_instances(tmp_path):
    """Several threads writing and reading the same keys never see torn or foreign data."""
    keys = block_hashes(list(range(64)), 4)
    store = GlobalKVStore(num_layers=2, memory_bytes=40 * _kv(0).numel() * 4, disk_dir=tmp_path)
    errors: list[str] = []

    def worker(w: int) -> None:
        for rep in range(3):
            for i, k in enumerate(keys):
                layer = (i + w + rep) % 2
                store.put(k, layer, _kv(100 * i + layer))
                got = store.get(k, layer)
                if got is None or not torch.equal(got, _kv(100 * i + layer)):
                    errors.append(f"worker {w} key {i}")

    threads = [threading.Thread(target=worker, args=(w,)) for w in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert store.stats().corrupt_dropped == 0
    fresh = GlobalKVStore(num_layers=2, memory_bytes=0, disk_dir=tmp_path)
    assert fresh.match_prefix(keys) == len(keys)


@pytest.mark.parametrize(
    "call",
    [
        lambda p: GlobalKVStore(num_layers=0),
        lambda p: GlobalKVStore(num_layers=1, memory_bytes=-1),
        lambda p: GlobalKVStore(num_layers=1).put(b"k", 3, _kv(0)),
        lambda p: block_hashes([1, 2], 0),
        lambda p: block_hashes([-1, 2], 2),
        lambda p: DiskTier(p / "file" / "sub"),
    ],
)
def test_bad_input_is_a_clear_error(tmp_path, call):
    (tmp_path / "file").write_text("not a directory")
    with pytest.raises(LlmplanError):
        call(tmp_path)


def test_a_failing_disk_write_keeps_the_block_in_memory_and_is_counted(tmp_path):
    key = block_hashes(list(range(4)), 4)[0]
    store = GlobalKVStore(num_layers=1, memory_bytes=1 << 20, disk_dir=tmp_path)
    (tmp_path / key.hex()[:2]).write_text("a file where the shard directory should be")
    store.put(key, 0, _kv(5))  # must not raise: the prefill writing back goes on
    assert store.stats().disk_write_errors == 1
    assert torch.equal(store.get(key, 0), _kv(5))
    assert not list(tmp_path.rglob("*.tmp.*"))


def test_v1_sha256_files_from_an_older_store_are_still_read_and_checked(tmp_path):
    import hashlib

    from llmplan.kvstore import disk

    key = (block_hashes(list(range(4)), 4)[0], 1)
    t = _kv(3)
    v2 = disk.encode(key, t)
    body = bytearray(v2[:-4])
    body[4] = 1  # the version byte
    v1 = bytes(body) + hashlib.sha256(bytes(body)).digest()
    assert torch.equal(disk.decode(bytearray(v1), key), t)
    rotten = bytearray(v1)
    rotten[len(rotten) // 2] ^= 0x10
    with pytest.raises(ValueError, match="checksum"):
        disk.decode(rotten, key)


_HAMMER = """
import sys, torch
from llmplan.kvstore.disk import DiskTier
from llmplan.kvstore.hashing import block_hashes
root, evict = sys.argv[1], sys.argv[2] == "1"
tier = DiskTier(root)
keys = block_hashes(list(range(64)), 4)
for r in range(40):
    for j, k in enumerate(keys):
        tier.put((k, 0), torch.randn(2, 4, 2, 8, generator=torch.Generator().manual_seed(j)))
    if evict and r % 5 == 0:
        for k in keys[::3]:  # as a capacity-bound server would
            tier.path((k, 0)).unlink(missing_ok=True)
"""


@pytest.mark.slow  # several processes; > 3 s on 2 cores
def test_processes_rewriting_and_evicting_one_directory_never_serve_a_torn_file(tmp_path):
    # Two processes rewrite the same blocks over and over (several servers prefilling the same
    # prompt at once), one also deleting some; this process reads them all the while.
    import subprocess
    import sys

    writers = [subprocess.Popen([sys.executable, "-c", _HAMMER, str(tmp_path), e]) for e in ("0", "1")]
    reader = DiskTier(tmp_path)
    keys = block_hashes(list(range(64)), 4)
    served = 0
    try:
        while any(p.poll() is None for p in writers):
            for j, k in enumerate(keys):
                if (k, 0) in reader:  # a lookup sees the other processes' files
                    t = reader.get((k, 0))
                    if t is not None:  # None: evicted between lookup and read -- a plain miss
                        assert torch.equal(t, _kv(j))
                        served += 1
    finally:
        for p in writers:
            p.wait(timeout=60)
    assert all(p.returncode == 0 for p in writers)
    assert served > 0 and reader.corrupt_dropped == 0
