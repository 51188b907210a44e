"""A minimal OpenAI-style backend process for supervisor tests (stdlib only).

Usage: python stub_backend.py PORT [--crash-after N] [--delay S]
It answers /health and /v1/completions; with --crash-after it exits hard (os._exit)
while handling its N-th completion, as a crashing engine would.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

COUNT = {"n": 0}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("port", type=int)
    ap.add_argument("--crash-after", type=int, default=0)
    ap.add_argument("--delay", type=float, default=0.0)
    ap.add_argument("--name", default="stub")
    args = ap.parse_args()

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *a: object) -> None:  # keep test output quiet
            pass

        def _send(self, code: int, body: dict) -> None:
            data = json.dumps(body).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:  # noqa: N802
            if self.path == "/health":
                self._send(200, {"ok": True})
            elif self.path == "/metrics":
                data = f"llmplan_requests_waiting 0\nstub_served {COUNT['n']}\n".encode()
                self.send_response(200)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
            else:
                self._send(404, {"error": "not found"})

        def do_POST(self) -> None:  # noqa: N802
            length = int(self.headers.get("Content-Length", 0))
            body = json.loads(self.rfile.read(length) or b"{}")
            COUNT["n"] += 1
            if args.crash_after and COUNT["n"] >= args.crash_after:
                os._exit(3)
            time.sleep(args.delay)
            kv = body.get("kv_transfer_params")
            if kv and kv.get("do_remote_decode"):
                # Acting as a P/D prefill instance: say where the decode side finds the KV.
                pre = {"remote_engine_id": args.name, "remote_block_ids": [7]}
                self._send(200, {"id": "pre", "choices": [], "kv_transfer_params": pre})
                return
            self._send(
                200,
                {
                    "received_kv": kv,
                    "id": f"cmpl-{COUNT['n']}",
                    "object": "text_completion",
                    "backend": args.name,
                    "choices": [{"index": 0, "text": "ok", "finish_reason": "length"}],
                    "usage": {"prompt_tokens": 1, "completion_tokens": body.get("max_tokens", 1)},
                },
            )

    ThreadingHTTPServer(("127.0.0.1", args.port), Handler).serve_forever()


if __name__ == "__main__":
    main()
