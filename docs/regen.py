"""Regenerate the command output shown in docs/*.md and README.md from real runs.

A fenced block is regenerated when the line right above its opening fence is a marker::

    <!-- regen -->                      fast and deterministic: checked by tests/test_docs_fresh.py
    <!-- regen slow -->                 re-run only with --slow; not checked (long or needs data)
    <!-- regen mask="REGEX" -->         timed output: in lines matching REGEX, digits are masked
                                         when checking (the regenerated file keeps the real ones)
    <!-- regen setup="CMD" -->          run CMD (bash, not shown) first, e.g. to write an input
                                         file; $REPO is the repository root
    <!-- regen slow serve="ARGS" -->    start a real ``llmplan serve ARGS`` on 127.0.0.1 (its
                                         ``--port``, default 8000) first, wait for /health, run
                                         the block's commands (curl ...) against it, then stop it
                                         with SIGINT (a drain, as Ctrl-C)

Inside the block, every line starting with ``$ `` is a command (a trailing ``\\`` continues it
on the next line); everything up to the next command is its output, replaced on regeneration.
A command that exits non-zero gets an ``exit N`` line after its output. Lines starting with
``# `` before the first command are kept (comments, not commands).

Commands run in a scratch directory whose ``../shared`` is the repository's, with the
repository's code first on ``PYTHONPATH``, no ``COLUMNS``, progress off, offline. A plain
``llmplan ARGS`` (no shell syntax) runs in-process through the console script's ``main``, which
prints exactly what the subprocess would and is ~20x cheaper (so is ``llmplan ... | grep -E RX``,
filtered here with the same expression); anything else runs under bash.

Usage::

    python -m docs.regen                 # rewrite every fast block in place
    python -m docs.regen --slow          # ... and the slow ones too
    python -m docs.regen --check         # exit 1 and show a diff if a fast block is stale
    python -m docs.regen docs/plan.md    # only these files
"""

from __future__ import annotations

import argparse
import contextlib
import difflib
import io
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MARKER = re.compile(r"^<!--\s*regen\b(?P<opts>.*?)-->\s*$")
SHELL_CHARS = set("|&;<>()$`*?[]{}~'\"\\")


@dataclass
class Block:
    path: Path
    start: int  # index of the first line inside the fence
    end: int  # index of the closing fence
    slow: bool = False
    mask: str | None = None
    setup: str | None = None
    serve: str | None = None
    lines: list[str] = field(default_factory=list)

    def commands(self) -> list[tuple[list[str], str]]:
        """(the command's lines as written, the command joined) for each ``$`` command."""
        out: list[tuple[list[str], str]] = []
        i = 0
        while i < len(self.lines):
            line = self.lines[i]
            if line.startswith("$ "):
                written = [line]
                while written[-1].endswith("\\") and i + 1 < len(self.lines):
                    i += 1
                    written.append(self.lines[i])
                cmd = " ".join(w.removeprefix("$ ").rstrip("\\").strip() for w in written)
                out.append((written, cmd))
            i += 1
        return out

    def header(self) -> list[str]:
        head = []
        for line in self.lines:
            if line.startswith("$ "):
                break
            head.append(line)
        return head


def find_blocks(path: Path) -> list[Block]:
    lines = path.read_text().split("\n")
    blocks = []
    i = 0
    while i < len(lines):
        m = MARKER.match(lines[i])
        if m and i + 1 < len(lines) and lines[i + 1].startswith("```"):
            opts = m["opts"]
            j = i + 2
            while j < len(lines) and not lines[j].startswith("```"):
                j += 1
            mask = re.search(r'mask="([^"]*)"', opts)
            setup = re.search(r'setup="((?:[^"\\]|\\.)*)"', opts)
            serve = re.search(r'serve="([^"]*)"', opts)
            blocks.append(Block(path, i + 2, j, slow=re.search(r"\bslow\b", opts) is not None,
                                mask=mask[1] if mask else None,
                                setup=setup[1].replace('\\"', '"') if setup else None,
                                serve=serve[1] if serve else None,
                                lines=lines[i + 2 : j]))  # fmt: skip
            i = j
        i += 1
    return blocks


def _env(scratch: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES")}
    env.update(
        PYTHONPATH=str(ROOT) + os.pathsep + env.get("PYTHONPATH", ""),
        LLMPLAN_PROGRESS="0",
        HF_HUB_OFFLINE="1",
        TRANSFORMERS_OFFLINE="1",
        TOKENIZERS_PARALLELISM="false",
        PATH=str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", ""),
    )
    env.setdefault("LLMPLAN_DATA_DIR", str(scratch.parent / "shared" / "datasets"))
    return env


def _in_process(argv: list[str], cwd: Path, env: dict[str, str]) -> tuple[str, int]:
    from llmplan.cli.app import main

    buf = io.StringIO()
    old_env, old_argv, old_cwd = dict(os.environ), sys.argv, os.getcwd()
    os.environ.clear()
    os.environ.update(env)
    sys.argv = ["llmplan", *argv]
    os.chdir(cwd)
    code = 0
    try:
        with contextlib.redirect_stdout(buf), contextlib.redirect_stderr(buf):
            try:
                main()
            except SystemExit as exc:
                code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    finally:
        os.chdir(old_cwd)
        sys.argv = old_argv
        os.environ.clear()
        os.environ.update(old_env)
    return buf.getvalue(), code


def run_command(cmd: str, cwd: Path, env: dict[str, str], timeout: float = 1800) -> list[str]:
    """The output lines a reader sees for ``cmd`` (stdout and stderr as the terminal shows them)."""
    words = cmd.split()
    head, bar, tail = cmd.partition(" | ")
    grep = shlex.split(tail) if bar else []
    if (bar and head.split()[:1] == ["llmplan"] and not (set(head) & SHELL_CHARS) and len(grep) == 3
            and grep[:2] == ["grep", "-E"]):  # fmt: skip
        # `llmplan ... | grep -E RX`, the README's way to show a few lines: the same filter here.
        text, code = _in_process(shlex.split(head, comments=True)[1:], cwd, env)
        rx = re.compile(grep[2])
        text = "".join(ln for ln in text.splitlines(keepends=True) if rx.search(ln))
    elif words and words[0] == "llmplan" and not (set(cmd) & SHELL_CHARS):
        text, code = _in_process(shlex.split(cmd, comments=True)[1:], cwd, env)
    else:
        p = subprocess.run(["bash", "-c", cmd], cwd=cwd, env=env, capture_output=True, text=True,
                           timeout=timeout)  # fmt: skip
        text, code = p.stdout + p.stderr, p.returncode
    lines = [ln.rstrip() for ln in text.rstrip("\n").split("\n")] if text.strip() else []
    if code:
        lines.append(f"exit {code}")
    return lines


@contextlib.contextmanager
def live_server(args: str, cwd: Path, env: dict[str, str], timeout: float = 300):
    """A real ``llmplan serve ARGS`` on 127.0.0.1 for the block's commands; stopped (SIGINT) after."""
    argv = shlex.split(args)
    port = int(argv[argv.index("--port") + 1]) if "--port" in argv else 8000
    with socket.socket() as s:
        if s.connect_ex(("127.0.0.1", port)) == 0:
            raise SystemExit(f"docs.regen: port {port} is already in use; stop what listens there and re-run")
    log = (cwd / f"serve-{port}.log").open("wb")
    proc = subprocess.Popen([sys.executable, "-m", "llmplan.cli.app", "serve", *argv], cwd=cwd, env=env,
                            stdout=log, stderr=subprocess.STDOUT)  # fmt: skip
    try:
        deadline = time.monotonic() + timeout
        while True:
            if proc.poll() is not None:
                tail = (cwd / f"serve-{port}.log").read_text()[-2000:]
                raise SystemExit(f"docs.regen: `llmplan serve {args}` exited {proc.returncode}:\n{tail}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise SystemExit(f"docs.regen: `llmplan serve {args}` not healthy after {timeout:.0f} s")
            time.sleep(0.5)
        yield
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def regenerate(block: Block, scratch: Path) -> list[str]:
    env = _env(scratch)
    if block.setup:
        subprocess.run(["bash", "-c", block.setup], cwd=scratch / "work", env={**env, "REPO": str(ROOT)},
                       check=True, capture_output=True)  # fmt: skip
    out = block.header()
    server = live_server(block.serve, scratch / "work", env) if block.serve else contextlib.nullcontext()
    with server:
        for written, cmd in block.commands():
            out += written
            out += run_command(cmd, scratch / "work", env)
    return out


def masked(lines: list[str], mask: str | None) -> list[str]:
    if not mask:
        return lines
    rx = re.compile(mask)
    return [re.sub(r"\d", "#", ln) if rx.search(ln) else ln for ln in lines]


@contextlib.contextmanager
def scratch_dir():
    """A scratch cwd whose ../shared is the repository's shared data (as for a clone)."""
    with tempfile.TemporaryDirectory(prefix="llmplan-docs-") as tmp:
        base = Path(tmp)
        (base / "work").mkdir()
        shared = (ROOT.parent / "shared").resolve()
        if shared.exists():
            (base / "shared").symlink_to(shared)
        yield base


def doc_files() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def process(paths: list[Path], *, slow: bool, check: bool) -> int:
    stale = 0
    with scratch_dir() as scratch:
        for path in paths:
            blocks = [b for b in find_blocks(path) if slow or not b.slow]
            if not blocks:
                continue
            lines = path.read_text().split("\n")
            # Run top-down (a block may use a file an earlier one wrote), splice bottom-up (so
            # earlier line indices stay valid).
            fresh = [regenerate(b, scratch) for b in blocks]
            for b, new in reversed(list(zip(blocks, fresh, strict=True))):
                if check:
                    if masked(new, b.mask) != masked(b.lines, b.mask):
                        stale += 1
                        rel = path.relative_to(ROOT) if path.is_relative_to(ROOT) else path
                        sys.stdout.writelines(
                            ln + "\n"
                            for ln in difflib.unified_diff(
                                b.lines, new, f"{rel} (committed)", f"{rel} (the code prints)", lineterm=""
                            )
                        )
                else:
                    lines[b.start : b.end] = new
            if not check:
                path.write_text("\n".join(lines))
                print(f"regenerated {len(blocks)} block(s) in {path}", file=sys.stderr)
    if check and stale:
        print(f"{stale} doc block(s) are stale; run `python -m docs.regen`", file=sys.stderr)
    return 1 if stale else 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m docs.regen", description=__doc__.split("\n\n")[0])
    ap.add_argument("files", nargs="*", type=Path, help="default: README.md and docs/*.md")
    ap.add_argument("--slow", action="store_true", help="also re-run blocks marked slow")
    ap.add_argument("--check", action="store_true", help="compare instead of rewriting; exit 1 if stale")
    a = ap.parse_args(argv)
    paths = [p.resolve() for p in a.files] or doc_files()
    return process(paths, slow=a.slow, check=a.check)


if __name__ == "__main__":
    raise SystemExit(main())
