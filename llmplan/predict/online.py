"""Online correction (UELLM 3.3.3): record mispredicted requests, then fine-tune on them.

The runtime calls :meth:`MispredictionRecorder.observe` when a request finishes; rows whose true
bucket differs from the predicted one, or whose reply outgrew the predicted upper bound, are
appended to a JSONL file in the generic ``{"prompt", "output_tokens"}`` format that
``llmplan predict update`` reads back.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Sequence
from pathlib import Path

from llmplan.predict.buckets import bucket_of


class MispredictionRecorder:
    def __init__(self, path: str | Path, bucket_edges: Sequence[int], record_all: bool = False) -> None:
        self.path = Path(path)
        self.edges = tuple(bucket_edges)
        self.record_all = record_all
        self.seen = 0
        self.recorded = 0
        self._lock = threading.Lock()  # the engine may finish requests from several tasks/threads

    def observe(
        self, prompt: str, predicted_bucket: int, actual_tokens: int, predicted_upper: int | None = None
    ) -> bool:
        """Record (prompt, actual length) if the prediction was wrong: another bucket, or (when the
        predictor gave one) a reply longer than its upper bound, i.e. too little KV booked. Returns
        whether it was recorded."""
        true_bucket = int(bucket_of([actual_tokens], self.edges)[0])
        short = predicted_upper is not None and actual_tokens > predicted_upper
        with self._lock:
            self.seen += 1
            if true_bucket == predicted_bucket and not short and not self.record_all:
                return False
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with self.path.open("a", encoding="utf-8") as fh:
                fh.write(
                    json.dumps(
                        {
                            "prompt": prompt,
                            "output_tokens": int(actual_tokens),
                            "predicted_bucket": int(predicted_bucket),
                            "true_bucket": true_bucket,
                            "predicted_upper": predicted_upper,
                        },
                        ensure_ascii=False,
                    )
                    + "\n"
                )
            self.recorded += 1
            return True
