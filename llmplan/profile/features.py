"""Task features for the resource profiler: task type, language, input length, output length.

Task type and language come from the suite's labels when present; for free text they are inferred
with keyword rules (:func:`infer_task`) and the share of CJK characters (:func:`detect_language`).
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np
import pandas as pd

TASK_TYPES = ("generation", "summarization", "translation", "code", "qa", "chat", "classification")
LANGUAGES = ("en", "zh")
NUMERIC = ("input_tokens", "output_tokens_est")
CATEGORICAL = ("task", "lang")
METRICS = ("max_util", "mean_util", "max_mem_mb", "mean_mem_mb", "latency_s")

_CJK = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")
# Ordered: the first rule that matches wins (a "translate this code" prompt is translation).
_TASK_RULES: list[tuple[str, re.Pattern[str]]] = [
    ("translation", re.compile(r"translat|翻译|译成|into (english|chinese|french|japanese)", re.I)),
    ("summarization", re.compile(r"summar|tl;dr|headline|bullet points|概括|总结|摘要|标题", re.I)),
    (
        "code",
        re.compile(
            r"python|javascript|sql|bash|rust|regex|regular expression|dockerfile|function|代码|"
            r"函数|def |class |\bC\b",
            re.I,
        ),
    ),
    (
        "classification",
        re.compile(
            r"classif|sentiment|positive or negative|is this .* spam|label the|tag the|"
            r"正面|负面|判断|类别|识别意图",
            re.I,
        ),
    ),
    ("generation", re.compile(r"\bwrite\b|\bdraft\b|poem|story|essay|写一|帮我写|为.*写", re.I)),
    (
        "qa",
        re.compile(
            r"^(what|who|why|how|when|where|which|is|are|does|do)\b|\?$|？$|什么|为什么|多少|哪|谁", re.I
        ),
    ),
]


def detect_language(text: str) -> str:
    """``zh`` when at least 20% of the non-space characters are CJK ideographs, else ``en``."""
    chars = [c for c in text if not c.isspace()]
    if not chars:
        return "en"
    return "zh" if len(_CJK.findall(text)) / len(chars) >= 0.2 else "en"


def infer_task(text: str) -> str:
    t = text.strip()
    for task, pattern in _TASK_RULES:
        if pattern.search(t):
            return task
    return "chat"


def feature_frame(
    prompts: Sequence[str],
    input_tokens: Sequence[int],
    output_tokens_est: Sequence[int],
    tasks: Sequence[str | None] | None = None,
    langs: Sequence[str | None] | None = None,
) -> pd.DataFrame:
    """One row of features per prompt; missing task/lang labels are inferred from the text."""
    n = len(prompts)
    tasks = tasks or [None] * n
    langs = langs or [None] * n
    return pd.DataFrame(
        {
            "task": [t or infer_task(p) for p, t in zip(prompts, tasks, strict=True)],
            "lang": [g or detect_language(p) for p, g in zip(prompts, langs, strict=True)],
            "input_tokens": np.asarray(input_tokens, dtype=float),
            "output_tokens_est": np.asarray(output_tokens_est, dtype=float),
        }
    )


def numeric_matrix(df: pd.DataFrame) -> np.ndarray:
    """Log token counts: resource use grows roughly multiplicatively with length."""
    return np.log1p(df[list(NUMERIC)].to_numpy(dtype=float))


def design_matrix(df: pd.DataFrame) -> np.ndarray:
    """Regression inputs: raw and log token counts plus one-hot task and language (fixed vocabulary so
    every cluster's model sees the same columns)."""
    num = df[list(NUMERIC)].to_numpy(dtype=float)
    cols = [num, np.log1p(num), num.prod(axis=1, keepdims=True)]
    cols += [(df["task"].to_numpy() == t)[:, None].astype(float) for t in TASK_TYPES]
    cols += [(df["lang"].to_numpy() == g)[:, None].astype(float) for g in LANGUAGES]
    return np.hstack(cols)
