"""A learnable synthetic length signal: the prompt's wording decides the reply length, while prompt
lengths overlap across classes so a length-only model cannot separate them."""

from __future__ import annotations

import random

from llmplan.predict.data import LengthDataset, as_examples

TOPICS = [
    "the ocean",
    "tax policy in small towns",
    "why cats purr",
    "the history of the printing press in Europe",
    "gardening",
    "quantum computing for beginners and experts alike",
    "coffee",
    "a trip to the mountains",
    "volcanoes",
    "the economics of renewable energy subsidies",
    "jazz",
    "medieval castles and their defences",
]
KINDS = [
    ("Answer yes or no: is {t} interesting?", 3),  # bucket [0,8)
    ("Write a short paragraph about {t}.", 90),  # [64,128)
    ("Write a long detailed essay about {t}.", 700),  # [512,1024)
]
SHIFTED = [  # a new phrasing the first model never saw; its true length is long
    ("Please tell me everything you know about {t}, in depth.", 700),
]


def synthetic(n: int, seed: int = 0, kinds=KINDS) -> LengthDataset:
    rng = random.Random(seed)
    prompts, outs = [], []
    for i in range(n):
        text, length = kinds[i % len(kinds)]
        prompts.append(text.format(t=rng.choice(TOPICS)))
        outs.append(int(length * rng.uniform(0.8, 1.2)))
    return as_examples(prompts, outs)
