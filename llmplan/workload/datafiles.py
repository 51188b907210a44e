"""Where dataset files live, and fetching them once when they are absent.

Lookup order: ``$LLMPLAN_DATA_DIR/<subdir>/<file>``, then the user cache dir
(platformdirs), then a download from the dataset's official address into the cache,
checked against a pinned sha256 where one is known. Offline and absent, the error names
every place the file may be put.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

from llmplan.errors import DataNotFoundError, LlmplanError

DATA_DIR_ENV = "LLMPLAN_DATA_DIR"
_AZURE_RAW = "https://raw.githubusercontent.com/Azure/AzurePublicDataset/master/data/"
# The 2024 week-long traces are too large for the repository tree; they ship as release assets.
_AZURE_2024 = "https://github.com/Azure/AzurePublicDataset/releases/download/dataset-llm-2024/"


@dataclass(frozen=True, slots=True)
class DataFile:
    """A dataset file with its official address and, when pinned, its sha256."""

    subdir: str
    filename: str
    url: str
    sha256: str | None = None
    license: str = ""
    citation: str = ""

    @property
    def relpath(self) -> str:
        return f"{self.subdir}/{self.filename}"


SPLITWISE = 'Patel et al., "Splitwise: Efficient generative LLM inference using phase splitting", ISCA 2024'

AZURE_FILES: dict[str, DataFile] = {
    "azure-conv": DataFile(
        "azure-llm-2023",
        "AzureLLMInferenceTrace_conv.csv",
        _AZURE_RAW + "AzureLLMInferenceTrace_conv.csv",
        "2f1e5b666d4e3055fdbba98598ce2ec307767b9064e03e2fa46676dbcc7d0bf8",
        "CC-BY 4.0",
        SPLITWISE,
    ),
    "azure-code": DataFile(
        "azure-llm-2023",
        "AzureLLMInferenceTrace_code.csv",
        _AZURE_RAW + "AzureLLMInferenceTrace_code.csv",
        "54e9a6d2a4bd06ba1e060304b900abbc74cbea53de96506e60fe5bb4f2277fb6",
        "CC-BY 4.0",
        SPLITWISE,
    ),
    # The 2024 week-long traces share the schema; their hashes are not pinned here, so a
    # download is recorded with the sha256 it had rather than checked against one.
    "azure-conv-2024": DataFile(
        "azure-llm-2024",
        "AzureLLMInferenceTrace_conv_1week.csv",
        _AZURE_2024 + "AzureLLMInferenceTrace_conv_1week.csv",
        None,
        "CC-BY 4.0",
        "Stojkovic et al., DynamoLLM, HPCA 2025 (Azure LLM inference trace 2024)",
    ),
    "azure-code-2024": DataFile(
        "azure-llm-2024",
        "AzureLLMInferenceTrace_code_1week.csv",
        _AZURE_2024 + "AzureLLMInferenceTrace_code_1week.csv",
        None,
        "CC-BY 4.0",
        "Stojkovic et al., DynamoLLM, HPCA 2025 (Azure LLM inference trace 2024)",
    ),
}


def cache_dir() -> Path:
    import platformdirs

    return Path(platformdirs.user_cache_dir("llmplan")) / "datasets"


def candidate_paths(df: DataFile) -> list[Path]:
    paths = []
    env = os.environ.get(DATA_DIR_ENV)
    if env:
        paths.append(Path(env).expanduser() / df.relpath)
    paths.append(cache_dir() / df.relpath)
    return paths


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def resolve(df: DataFile, *, download: bool = True, show_progress: bool = True) -> Path:
    """Return a local path to ``df``, downloading it into the cache if it is nowhere yet."""
    for path in candidate_paths(df):
        if path.is_file():
            return path
    if not download or os.environ.get("LLMPLAN_OFFLINE") == "1":
        raise DataNotFoundError(_absent_message(df))
    return _download(df, cache_dir() / df.relpath, show_progress=show_progress)


def _absent_message(df: DataFile, why: str = "") -> str:
    where = " or ".join(str(p) for p in candidate_paths(df))
    if not os.environ.get(DATA_DIR_ENV):
        where += f" (or set {DATA_DIR_ENV}=DIR and put it in DIR/{df.relpath})"
    why = f" ({why})" if why else ""
    return f"{df.filename} not found and could not be downloaded{why}; fetch {df.url} and put it at {where}"


def _download(df: DataFile, dest: Path, *, show_progress: bool) -> Path:
    import httpx
    from rich.console import Console
    from rich.progress import BarColumn, DownloadColumn, Progress, TransferSpeedColumn

    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    h = hashlib.sha256()
    try:
        with httpx.stream("GET", df.url, follow_redirects=True, timeout=30.0) as resp:
            resp.raise_for_status()
            total = int(resp.headers.get("content-length", 0)) or None
            with (
                Progress(
                    "[progress.description]{task.description}",
                    BarColumn(),
                    DownloadColumn(),
                    TransferSpeedColumn(),
                    disable=not show_progress,
                    transient=True,
                    console=Console(stderr=True),  # stdout may carry --json output
                ) as progress,
                open(part, "wb") as out,
            ):
                task = progress.add_task(f"downloading {df.filename}", total=total)
                for chunk in resp.iter_bytes(1 << 16):
                    out.write(chunk)
                    h.update(chunk)
                    progress.advance(task, len(chunk))
    except (httpx.HTTPError, OSError) as exc:
        part.unlink(missing_ok=True)
        raise DataNotFoundError(_absent_message(df, type(exc).__name__)) from exc
    digest = h.hexdigest()
    if df.sha256 is not None and digest != df.sha256:
        part.unlink(missing_ok=True)
        raise LlmplanError(
            f"downloaded {df.filename} has sha256 {digest[:12]}..., expected {df.sha256[:12]}...; "
            f"the file changed upstream or the download was corrupted: fetch {df.url} by hand "
            f"and put it at {dest}"
        )
    part.replace(dest)
    return dest
