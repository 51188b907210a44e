"""How much a prompt decides its reply length on ShareGPT: the label noise a length predictor faces.

Groups the ShareGPT first-turn pairs by normalised prompt and, for prompts seen at least twice,
compares the first two replies: how many are identical copies (the same chat shared twice), and for
the pairs whose replies differ, how often they share a UELLM bucket, their Spearman/Kendall
correlation and the spread of their length ratio. A predictor that sees only the prompt cannot
order or bound single replies better than these pairs agree with each other.

    python benchmarks/predict_label_noise.py
"""

from __future__ import annotations

from collections import defaultdict


def main() -> None:
    import numpy as np
    from scipy.stats import kendalltau, spearmanr

    from llmplan.predict.buckets import bucket_of
    from llmplan.predict.data import load_dataset, normalize_prompt

    ds = load_dataset("sharegpt")
    groups: dict[str, list[int]] = defaultdict(list)
    for e in ds.examples:
        groups[normalize_prompt(e.prompt)].append(e.output_tokens)
    pairs = np.array([(v[0], v[1]) for v in groups.values() if len(v) >= 2])
    a, b = pairs[:, 0], pairs[:, 1]
    diff = a != b
    ratio = np.abs(np.log1p(a[diff]) - np.log1p(b[diff]))
    print(f"{ds.source}: {len(ds)} pairs; tokenizer {ds.tokenizer}")
    same = float(np.mean(bucket_of(a[diff]) == bucket_of(b[diff])))
    rho = spearmanr(a[diff], b[diff]).statistic
    tau = kendalltau(a[diff], b[diff]).statistic
    med, p90 = np.exp(np.median(ratio)), np.exp(np.quantile(ratio, 0.9))
    print(
        f"prompts seen at least twice: {len(pairs)}; first two replies of equal length: "
        f"{int((~diff).sum())}; different: {int(diff.sum())}"
    )
    print(
        f"pairs with different replies: same bucket {same:.1%}, Spearman {rho:.3f}, Kendall {tau:.3f}, "
        f"length ratio median {med:.2f}x, p90 {p90:.2f}x"
    )


if __name__ == "__main__":
    main()
