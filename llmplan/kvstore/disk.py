"""Disk tier: one file per (block, layer), self-describing and checksummed, written atomically.

File layout::

    b"LPKV" | u8 version | u32 header_len | header (JSON: dtype, shape, layer, key) | payload
    | crc32(everything before)             (4 bytes, little-endian; v1 files: sha256, 32 bytes)

A reader recomputes the checksum over the whole file, so a flipped bit anywhere, a truncation or
a half-written file is detected; such a file is deleted and reported as a miss, so the caller
recomputes the block instead of serving garbage. Writes go to a unique temporary name and
``os.replace`` into place (atomic on POSIX), so a crash leaves either the old file or none;
stale temporaries are swept when the tier opens. Opening re-indexes the directory from file
names (cheap: no reads); contents are verified on load. Several processes may share one
directory: a lookup that misses the index consults the directory (another process may have
written the block), and a file another process evicted is a plain miss.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import struct
import threading
import time
import uuid
import zlib
from collections import OrderedDict
from pathlib import Path

import torch

from llmplan.errors import LlmplanError
from llmplan.kvstore.memory import Key

log = logging.getLogger(__name__)

MAGIC = b"LPKV"
VERSION = 2
SUFFIX = ".kvb"
_PREFIX = struct.Struct("<4sBI")
STALE_TMP_S = 300.0  # a temporary this old belongs to a writer that died
_DTYPES = {str(d): d for d in (torch.float32, torch.float16, torch.bfloat16, torch.float64, torch.int8,
                               torch.uint8, torch.float8_e4m3fn, torch.float8_e5m2)}


def _crc32(data) -> bytes:
    return zlib.crc32(data).to_bytes(4, "little")


def _sha256(data) -> bytes:
    return hashlib.sha256(data).digest()


# version -> (trailer bytes, checksum). v2's CRC-32 catches what a cache file suffers -- torn or
# truncated writes, bit rot, a file under the wrong name -- at ~2.6x sha256's speed on this CPU
# (29 vs 76 us per 96 KiB block); it is no defence against a malicious writer, which a cache
# directory shared by trusted servers does not need (RocksDB checksums its blocks the same way).
# v1 files (sha256) from an older store are still read.
_CHECKSUMS = {1: (32, _sha256), 2: (4, _crc32)}


def encode_parts(key: Key, t: torch.Tensor) -> list[bytes | memoryview]:
    """The file's bytes in pieces (no concatenated copy of the payload): write them in order."""
    t = t.detach().to("cpu").contiguous()
    if str(t.dtype) not in _DTYPES:
        raise LlmplanError(f"the KV store cannot persist dtype {t.dtype}; use fp32/fp16/bf16/fp8/int8")
    header = json.dumps(
        {"dtype": str(t.dtype), "shape": list(t.shape), "layer": key[1], "key": key[0].hex()}
    ).encode()
    head = _PREFIX.pack(MAGIC, VERSION, len(header)) + header
    payload = memoryview(t.reshape(-1).view(torch.uint8).numpy()) if t.numel() else memoryview(b"")
    crc = zlib.crc32(payload, zlib.crc32(head))
    return [head, payload, crc.to_bytes(4, "little")]


def encode(key: Key, t: torch.Tensor) -> bytes:
    return b"".join(bytes(p) for p in encode_parts(key, t))


def decode(data: bytes | bytearray, key: Key) -> torch.Tensor:
    """Inverse of :func:`encode`; raises ``ValueError`` on any corruption or mismatch.

    Zero-copy over a ``bytearray`` (what :meth:`DiskTier.get` reads into): the checksum and the
    tensor both view the buffer, so a load costs one read and one checksum pass.
    """
    if len(data) < _PREFIX.size:
        raise ValueError(f"truncated ({len(data)} bytes)")
    view = memoryview(data)
    magic, version, hlen = _PREFIX.unpack_from(view)
    if magic != MAGIC or version not in _CHECKSUMS:
        raise ValueError("not a KV block file (bad magic or version)")
    size, checksum = _CHECKSUMS[version]
    if len(data) < _PREFIX.size + size:
        raise ValueError(f"truncated ({len(data)} bytes)")
    body, digest = view[:-size], view[-size:]
    if checksum(body) != digest:
        raise ValueError("checksum mismatch")
    header = json.loads(bytes(body[_PREFIX.size:_PREFIX.size + hlen]))
    if header["key"] != key[0].hex() or header["layer"] != key[1]:
        raise ValueError("file holds another block")
    dtype = _DTYPES[header["dtype"]]
    payload = body[_PREFIX.size + hlen:]
    shape = tuple(header["shape"])
    expect = torch.Size(shape).numel() * torch.empty((), dtype=dtype).element_size()
    if len(payload) != expect:
        raise ValueError(f"payload is {len(payload)} bytes, header says {expect}")
    if not expect:
        return torch.empty(shape, dtype=dtype)
    if isinstance(data, bytes):  # torch.frombuffer needs a writable buffer
        payload = memoryview(bytearray(payload))
    return torch.frombuffer(payload, dtype=torch.uint8).view(dtype).reshape(shape)


def _warn_if_shared(root: Path) -> None:
    """A store directory other users can write lets them poison every answer: say so."""
    try:
        mode = root.stat().st_mode
    except OSError:
        return
    if mode & 0o022:
        log.warning("KV store directory %s is writable by other users (mode %o); anyone who can write it "
                    "can change what the model outputs: chmod 700 it", root, mode & 0o777)


class DiskTier:
    def __init__(self, root: str | os.PathLike, capacity_bytes: int | None = None) -> None:
        self.root = Path(root)
        try:
            # 0700: whoever can write this directory decides what the model attends to.
            self.root.mkdir(mode=0o700, parents=True, exist_ok=True)
        except OSError as e:
            raise LlmplanError(
                f"cannot create KV store directory {self.root}: {e}; pick a writable --kv-store directory"
            ) from e
        _warn_if_shared(self.root)
        self.capacity_bytes = capacity_bytes
        # (shape, dtype) every block of this store's model has; a file that decodes to anything
        # else (another model's block under a colliding name, a forged file) is corrupt.
        self.expect: tuple[tuple[int, ...], torch.dtype] | None = None
        self.used_bytes = 0
        self.corrupt_dropped = 0
        self.evictions = 0
        self._index: OrderedDict[Key, int] = OrderedDict()  # key -> file size, LRU order
        self._lock = threading.Lock()
        self._reindex()

    # -- layout
    def path(self, key: Key) -> Path:
        hx = key[0].hex()
        return self.root / hx[:2] / f"{hx}.L{key[1]}{SUFFIX}"

    @staticmethod
    def _parse(p: Path) -> Key | None:
        name = p.name[: -len(SUFFIX)]
        hx, _, layer = name.partition(".L")
        try:
            return bytes.fromhex(hx), int(layer)
        except ValueError:
            return None

    def _reindex(self) -> None:
        found: list[tuple[float, Key, int]] = []
        now = time.time()
        for sub in self.root.iterdir() if self.root.exists() else []:
            if not sub.is_dir():
                continue
            for p in sub.iterdir():
                if ".tmp." in p.name:
                    # A write that never reached its rename -- unless another process sharing
                    # the directory is writing it right now: only old temporaries are swept.
                    try:
                        if now - p.stat().st_mtime > STALE_TMP_S:
                            p.unlink(missing_ok=True)
                    except OSError:
                        pass
                    continue
                if p.suffix != SUFFIX:
                    continue
                key = self._parse(p)
                if key is None:
                    continue
                try:
                    st = p.stat()
                except OSError:  # evicted by another process while we listed
                    continue
                found.append((st.st_mtime, key, st.st_size))
        for _, key, size in sorted(found, key=lambda x: x[0]):
            self._index[key] = size
            self.used_bytes += size

    # -- API
    def __len__(self) -> int:
        return len(self._index)

    def __contains__(self, key: Key) -> bool:
        with self._lock:
            if key in self._index:
                return True
        # Other processes share the directory: a key this process never wrote may be there.
        # The directory is the truth; the index only saves the stat for what is known.
        try:
            size = self.path(key).stat().st_size
        except OSError:
            return False
        self._learn(key, size)
        return True

    def _learn(self, key: Key, size: int) -> None:
        with self._lock:
            if key in self._index:
                self._index.move_to_end(key)
                return
            self._index[key] = size
            self.used_bytes += size

    def keys(self) -> list[Key]:
        with self._lock:
            return list(self._index)

    def put(self, key: Key, t: torch.Tensor) -> None:
        parts = encode_parts(key, t)
        size = sum(len(p) for p in parts)
        path = self.path(key)
        path.parent.mkdir(mode=0o700, exist_ok=True)
        tmp = path.with_name(f"{path.name}.tmp.{os.getpid()}.{uuid.uuid4().hex[:8]}")
        try:
            with open(tmp, "wb") as f:
                for p in parts:
                    f.write(p)
            os.replace(tmp, path)
        except BaseException:
            tmp.unlink(missing_ok=True)  # a half-written temporary is never left behind
            raise
        with self._lock:
            old = self._index.pop(key, None)
            if old is not None:
                self.used_bytes -= old
            self._index[key] = size
            self.used_bytes += size
            victims = self._evict_locked()
        for k in victims:
            self.path(k).unlink(missing_ok=True)

    def _evict_locked(self) -> list[Key]:
        victims: list[Key] = []
        if self.capacity_bytes is None:
            return victims
        while self.used_bytes > self.capacity_bytes and len(self._index) > 1:
            k, size = self._index.popitem(last=False)
            self.used_bytes -= size
            self.evictions += 1
            victims.append(k)
        return victims

    def get(self, key: Key) -> torch.Tensor | None:
        path = self.path(key)
        try:
            with open(path, "rb") as f:
                data = bytearray(os.fstat(f.fileno()).st_size)
                n = f.readinto(data)
            t = decode(data if n == len(data) else data[:n], key)
            if self.expect is not None and (tuple(t.shape), t.dtype) != self.expect:
                shape, dtype = self.expect
                raise ValueError(f"holds a {t.dtype} block of shape {tuple(t.shape)}; this model's blocks "
                                 f"are {dtype} {shape}")
            self._learn(key, n)
            return t
        except FileNotFoundError:
            self._drop(key)
            return None
        except (ValueError, KeyError, json.JSONDecodeError, UnicodeDecodeError, struct.error) as e:
            log.warning("KV store: dropping corrupt block file %s (%s); it will be recomputed", path, e)
            with self._lock:
                self.corrupt_dropped += 1
            self._drop(key)
            path.unlink(missing_ok=True)
            return None

    def _drop(self, key: Key) -> None:
        with self._lock:
            size = self._index.pop(key, None)
            if size is not None:
                self.used_bytes -= size
