"""Paged KV block allocation: which sequence owns which fixed-size block of the KV pool.

The manager hands out block *ids*; the engine's ``PagedKVCache`` owns the tensors those ids
index and the simulator owns nothing at all. A sequence's block table is ``seq.block_ids``.
Preemption (recompute) is the scheduler's job: it calls :meth:`BlockManager.free` on the victim.

**Prefix caching** (``prefix_caching=True``; vLLM's automatic prefix caching): every *full*
block of a prompt whose KV has been computed is registered under a hash chained over the
block's token ids and its parent's hash, so a block is shared only when the whole prefix up to
it is identical. Blocks carry reference counts: a sequence admitted with a cached prefix takes
those blocks (count + 1) instead of computing them; a freed block whose count drops to 0 stays
cached, and such blocks are evicted least recently freed first, only when a fresh block is
needed and no never-cached block is left. Only prompt blocks are registered (in the simulator
generated tokens have no ids); a partial tail block is never shared. Token ids come from
``seq.prompt_token_ids`` (engine) or ``seq.spec.token_ids`` (workloads with exact ids); a
sequence without either is never cached.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict

import numpy as np

from llmplan.runtime.core.types import SeqState


def prompt_ids(seq: SeqState) -> np.ndarray | None:
    """The prompt's token ids as uint32, or None when the sequence has none."""
    if seq.prompt_token_ids:
        return np.asarray(seq.prompt_token_ids, dtype=np.uint32)
    ids = getattr(seq.spec, "token_ids", None)
    return None if ids is None else np.asarray(ids, dtype=np.uint32)


def chain_hashes(ids: np.ndarray, block_size: int) -> list[bytes]:
    """Hash of every full block of ``ids``, each chained over its parent's."""
    out: list[bytes] = []
    parent = b""
    raw = ids.astype("<u4", copy=False).tobytes()
    step = 4 * block_size
    for k in range(len(ids) // block_size):
        parent = hashlib.blake2b(parent + raw[k * step : (k + 1) * step], digest_size=16).digest()
        out.append(parent)
    return out


def blocks_for(tokens: int, block_size: int) -> int:
    """Blocks needed to hold ``tokens`` KV slots."""
    return -(-tokens // block_size) if tokens > 0 else 0


class BlockManager:
    """A free list of block ids, plus (optionally) a prefix cache of full prompt blocks.
    All operations are O(blocks moved)."""

    def __init__(self, num_blocks: int, block_size: int = 16, prefix_caching: bool = False) -> None:
        if num_blocks <= 0:
            raise ValueError(f"num_blocks must be positive, got {num_blocks}")
        if block_size <= 0:
            raise ValueError(f"block_size must be positive, got {block_size}")
        self.num_blocks = num_blocks
        self.block_size = block_size
        # Popped from the end: recently freed blocks are reused first (warm in cache on a GPU).
        self._free: list[int] = list(range(num_blocks - 1, -1, -1))
        self.prefix_caching = prefix_caching
        self._ref: dict[int, int] = {}  # cached or shared blocks in use: block -> owners
        self._hash_of: dict[int, bytes] = {}  # registered block -> its chain hash
        self._block_of: dict[bytes, int] = {}  # chain hash -> registered block
        self._evictable: OrderedDict[int, None] = OrderedDict()  # cached, count 0, LRU first
        self._seq_hashes: dict[int, list[bytes]] = {}  # rid -> prompt block hashes (memo)
        self._registered: dict[int, int] = {}  # rid -> leading blocks of its table registered
        self.hit_tokens = 0  # prompt tokens taken from the cache at admission
        self.query_tokens = 0  # prompt tokens looked up at admission
        self.evictions = 0

    @property
    def num_free(self) -> int:
        return len(self._free) + len(self._evictable)

    @property
    def num_cached(self) -> int:
        """Blocks holding a registered prefix (in use or evictable)."""
        return len(self._hash_of)

    # ------------------------------------------------------------------ prefix cache
    def _hashes(self, seq: SeqState) -> list[bytes]:
        h = self._seq_hashes.get(seq.rid)
        if h is None:
            ids = prompt_ids(seq)
            h = [] if ids is None else chain_hashes(ids, self.block_size)
            self._seq_hashes[seq.rid] = h
        return h

    def lookup(self, seq: SeqState, known: int) -> list[int]:
        """Cached blocks holding ``seq``'s longest cached prompt prefix, leaving at least the
        last of its ``known`` tokens to compute (its logits give the next token). No change."""
        if not self.prefix_caching:
            return []
        out: list[int] = []
        limit = (known - 1) // self.block_size
        for h in self._hashes(seq)[:limit]:
            b = self._block_of.get(h)
            if b is None:
                break
            out.append(b)
        return out

    def cached_prefix_blocks(self, hashes: list[bytes]) -> int:
        """Leading blocks of a prompt (its chain ``hashes``) the cache holds."""
        n = 0
        for h in hashes:
            if h not in self._block_of:
                break
            n += 1
        return n

    def evictable_among(self, blocks: list[int]) -> int:
        """How many of ``blocks`` sit unused in the cache (taking them uses free capacity)."""
        return sum(1 for b in blocks if b in self._evictable)

    def take_cached(self, seq: SeqState, blocks: list[int], prompt_tokens: int) -> int:
        """Start ``seq``'s (empty) block table with the cached ``blocks``; returns the tokens
        they hold. Counts the lookup in the hit statistics."""
        assert not seq.block_ids, "a cached prefix starts an empty block table"
        self.query_tokens += prompt_tokens
        if not blocks:
            return 0
        for b in blocks:
            if b in self._evictable:
                del self._evictable[b]
            self._ref[b] = self._ref.get(b, 0) + 1
        seq.block_ids.extend(blocks)
        self._registered[seq.rid] = len(blocks)
        hit = len(blocks) * self.block_size
        self.hit_tokens += hit
        return hit

    def register(self, seq: SeqState, computed: int) -> None:
        """Register ``seq``'s full prompt blocks whose KV is now computed (``computed`` tokens)."""
        if not self.prefix_caching:
            return
        hashes = self._hashes(seq)
        upto = min(computed // self.block_size, len(hashes), len(seq.block_ids))
        k = self._registered.get(seq.rid, 0)
        while k < upto:
            b, h = seq.block_ids[k], hashes[k]
            if h not in self._block_of and b not in self._hash_of:
                self._block_of[h] = b
                self._hash_of[b] = h
                self._ref[b] = self._ref.get(b, 0) + 1
            k += 1
        self._registered[seq.rid] = k

    def _pop_free(self) -> int:
        if self._free:
            return self._free.pop()
        return self._evict()

    def _evict(self) -> int:
        """Take the least recently freed unused cached block out of the cache."""
        b, _ = self._evictable.popitem(last=False)
        del self._block_of[self._hash_of.pop(b)]
        self._ref.pop(b, None)
        self.evictions += 1
        return b

    @property
    def num_used(self) -> int:
        """Blocks some sequence holds (unused cached blocks count as free, as in vLLM)."""
        return self.num_blocks - self.num_free

    @property
    def capacity_tokens(self) -> int:
        return self.num_blocks * self.block_size

    def capacity_of(self, seq: SeqState) -> int:
        """KV slots the sequence's blocks hold."""
        return len(seq.block_ids) * self.block_size

    def extra_blocks(self, seq: SeqState, tokens: int) -> int:
        """Blocks to add so that ``seq`` can hold ``tokens`` KV slots."""
        return max(0, blocks_for(tokens, self.block_size) - len(seq.block_ids))

    def can_allocate(self, n_blocks: int, watermark: int = 0) -> bool:
        return len(self._free) - n_blocks >= watermark

    def ensure(self, seq: SeqState, tokens: int) -> bool:
        """Grow ``seq``'s block table to hold ``tokens`` slots. False (and no change) if the
        pool cannot supply the blocks."""
        need = self.extra_blocks(seq, tokens)
        if need == 0:
            return True
        if need > self.num_free:
            return False
        self._grow(seq, need)
        return True

    def _grow(self, seq: SeqState, need: int) -> None:
        """Append ``need`` blocks (available: checked) to ``seq``'s table."""
        free = self._free
        if need <= len(free):
            seq.block_ids.extend(free[-need:][::-1])
            del free[-need:]
        else:
            seq.block_ids.extend(self._pop_free() for _ in range(need))

    def _release(self, plain: list[int]) -> None:
        """Return never-cached blocks to the free pool."""
        self._free.extend(reversed(plain))

    def free(self, seq: SeqState) -> int:
        """Return all of ``seq``'s blocks to the pool; returns how many. Registered blocks stay
        cached (evictable once no sequence uses them)."""
        n = len(seq.block_ids)
        if self.prefix_caching:
            self._registered.pop(seq.rid, None)
            self._seq_hashes.pop(seq.rid, None)
        if n:
            if self._ref:
                plain = []
                for b in seq.block_ids:
                    c = self._ref.get(b)
                    if c is None:
                        plain.append(b)
                    elif c > 1:
                        self._ref[b] = c - 1
                    else:
                        del self._ref[b]
                        self._evictable[b] = None  # newest last: evicted after older ones
                self._release(plain)
            else:
                self._release(seq.block_ids)
            seq.block_ids = []
        return n


def _runs(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Start and length of every run of True in ``mask``."""
    d = np.diff(np.concatenate(([0], mask.view(np.int8), [0])))
    starts = np.flatnonzero(d == 1)
    return starts, np.flatnonzero(d == -1) - starts


class ContiguousBlockManager(BlockManager):
    """The same accounting as :class:`BlockManager` (same counts, same refusals, same prefix
    cache), with placement that keeps each sequence's block table in consecutive ids, so the
    torch engine's attention reads a sequence's KV as one slice of the pool instead of
    gathering its blocks (``llmplan.runtime.engine.attention``).

    A sequence grows into the block after its last one when that is free. A new sequence (or
    one whose next block is taken) is placed at the start of the smallest run of free blocks
    that holds its expected length (prompt + ``spec.output_tokens``, the cap it runs to), and
    the rest of that length stays *reserved*: later placements avoid it while other space is
    left. With no unreserved room, a sequence starts halfway into the largest free run (the
    sequence before it keeps half of it to grow into). Placement is O(num_blocks) numpy work
    per placed sequence; growing in place is O(1). Which ids a sequence gets never changes
    how many blocks are free, so schedules are the same as :class:`BlockManager`'s.
    """

    def __init__(self, num_blocks: int, block_size: int = 16, prefix_caching: bool = False) -> None:
        super().__init__(num_blocks, block_size, prefix_caching)
        self._free = []  # unused: the bitmaps below are the free pool
        self._is_free = np.ones(num_blocks, dtype=bool)
        self._reserved = np.zeros(num_blocks, dtype=bool)
        self._nfree = num_blocks
        self._reservation: dict[int, tuple[int, int]] = {}  # rid -> reserved [start, end)

    @property
    def num_free(self) -> int:
        return self._nfree + len(self._evictable)

    def can_allocate(self, n_blocks: int, watermark: int = 0) -> bool:
        return self._nfree - n_blocks >= watermark

    def _take(self, seq: SeqState, start: int, n: int) -> None:
        self._is_free[start : start + n] = False
        self._reserved[start : start + n] = False
        self._nfree -= n
        seq.block_ids.extend(range(start, start + n))

    def _grow(self, seq: SeqState, need: int) -> None:
        ids = seq.block_ids
        if ids:
            b, n, end = ids[-1] + 1, 0, self.num_blocks
            while n < need and b + n < end and self._is_free[b + n]:
                n += 1
            if n:
                self._take(seq, b, n)
                need -= n
        while need:
            if self._nfree == 0:
                ids.append(self._evict())
                need -= 1
                continue
            start, n = self._place(seq, need)
            self._take(seq, start, n)
            need -= n

    def _place(self, seq: SeqState, need: int) -> tuple[int, int]:
        """Where ``seq``'s next ``need`` blocks go: (first block, how many fit there)."""
        expected = blocks_for(seq.spec.prompt_tokens + seq.spec.output_tokens, self.block_size)
        want = max(need, expected - len(seq.block_ids))
        self._unreserve(seq)
        starts, lens = _runs(self._is_free & ~self._reserved)
        if len(starts):
            fits = lens >= want  # best fit among runs that hold it, else the longest run
            i = int(np.argmin(np.where(fits, lens, self.num_blocks + 1) if fits.any() else -lens))
            s, length = int(starts[i]), int(lens[i])
            n = min(need, length)
            end = s + min(want, length)
            if end > s + n:
                self._reserved[s + n : end] = True
                self._reservation[seq.rid] = (s + n, end)
            return s, n
        starts, lens = _runs(self._is_free)
        i = int(np.argmax(lens))
        s, length = int(starts[i]), int(lens[i])
        s += max(0, (length - need) // 2)
        return s, min(need, int(starts[i]) + length - s)

    def _unreserve(self, seq: SeqState) -> None:
        r = self._reservation.pop(seq.rid, None)
        if r is not None:
            self._reserved[r[0] : r[1]] = False

    def _release(self, plain: list[int]) -> None:
        if plain:
            self._is_free[np.asarray(plain, dtype=np.int64)] = True
            self._nfree += len(plain)

    def free(self, seq: SeqState) -> int:
        self._unreserve(seq)
        return super().free(seq)
