"""`llmplan predict`: train, evaluate, query and update the output-length bucket predictor."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from llmplan.cli._common import console, print_json

predict_app = typer.Typer(
    name="predict",
    help=(
        "Train, evaluate, query and update the output-length bucket predictor "
        "(all-MiniLM-L6-v2 + LoRA, UELLM buckets [0,8),[8,16),...,[2048,inf)).\n\n"
        "Example: llmplan predict train --out runs/pred && llmplan predict eval runs/pred"
    ),
    no_args_is_help=True,
    rich_markup_mode="rich",
)

DATA_HELP = "'sharegpt' (packaged, offline), an Alpaca .json, or a .jsonl of {prompt, output_tokens}."


def _threads(n: int) -> None:
    import torch

    torch.set_num_threads(max(1, n))


@predict_app.command("train")
def train_cmd(
    out: Path = typer.Option(Path("predictor"), "--out", "-o", help="Directory the model is saved to."),
    data: str = typer.Option("sharegpt", "--data", help=DATA_HELP),
    base_model: str = typer.Option(
        None, "--base-model", help="Local HF model dir (default all-MiniLM-L6-v2)."
    ),
    edges: str = typer.Option(None, "--edges", help="Bucket edges, e.g. 0,8,16,32 (default UELLM's)."),
    epochs: int = typer.Option(1, "--epochs"),
    batch_size: int = typer.Option(16, "--batch-size"),
    max_length: int = typer.Option(
        64, "--max-length", help="Encoder tokens seen per prompt (rest truncated)."
    ),
    lr: float = typer.Option(1e-3, "--lr"),
    lora_r: int = typer.Option(8, "--lora-r"),
    seed: int = typer.Option(0, "--seed", help="Seed of the train/test split and of training."),
    test_frac: float = typer.Option(0.2, "--test-frac"),
    limit: int = typer.Option(None, "--limit", help="Train on a random subset of this many examples."),
    max_steps: int = typer.Option(None, "--max-steps", help="Stop after this many optimizer steps."),
    checkpoint_steps: int = typer.Option(100, "--checkpoint-steps"),
    time_budget_min: float = typer.Option(
        None, "--time-budget-min", help="Stop after this many minutes (checkpointed; continue with --resume)."
    ),
    resume: bool = typer.Option(False, "--resume", help="Continue from <out>/checkpoint."),
    threads: int = typer.Option(2, "--threads", help="torch CPU threads."),
    kind: str = typer.Option(
        "lora",
        "--kind",
        help="lora (MiniLM + LoRA, the heads below) or gbm (the prompt-length LightGBM baseline, "
        "saved as LightGBM text + JSON; bench --predictor gbm:DIR).",
    ),
    heads: str = typer.Option(
        "bucket,rank,quantile",
        "--heads",
        help="Heads trained jointly on the shared encoder: bucket (classifier, always), rank (pairwise "
        "RankNet on log length: the order SJF/S3 use) and quantile (p50/p90 of log length, pinball "
        "loss, p90 conformally calibrated on a held-out 10% of the train groups: the KV upper bound).",
    ),
    calib_frac: float = typer.Option(
        0.1, "--calib-frac", help="Share of the train groups held out to calibrate the quantile head."
    ),
    init_from: Path = typer.Option(
        None,
        "--init-from",
        help="A saved predictor: keep its encoder and bucket head frozen and fit only the rank/quantile "
        "heads on its pooled features (one forward pass over the data, then seconds; its edges and "
        "max length are kept).",
    ),
    as_json: bool = typer.Option(False, "--json", help="Print the summary as JSON."),
) -> None:
    """Fine-tune the predictor on the train split (split by conversation id with --seed)."""
    from llmplan.errors import LlmplanError
    from llmplan.predict.buckets import parse_edges
    from llmplan.predict.data import load_dataset, split_dataset, take
    from llmplan.predict.model import parse_heads
    from llmplan.predict.train import TrainConfig, train
    from llmplan.validate import integer, number, positive

    # Every option checked before the data set loads (seconds) or training starts (minutes).
    integer(epochs, "--epochs", lo=1, hi=10_000)
    integer(batch_size, "--batch-size", lo=1, hi=1 << 16)
    integer(max_length, "--max-length", lo=1, hi=1 << 16)
    integer(lora_r, "--lora-r", lo=1, hi=4096)
    integer(checkpoint_steps, "--checkpoint-steps", lo=1)
    positive(lr, "--lr", fix="e.g. --lr 1e-3")
    number(test_frac, "--test-frac", lo=0, hi=1, lo_open=True, hi_open=True, fix="e.g. 0.2")
    for flag, v in (("--limit", limit), ("--max-steps", max_steps)):
        if v is not None:
            integer(v, flag, lo=1)
    if time_budget_min is not None:
        positive(time_budget_min, "--time-budget-min")
    number(calib_frac, "--calib-frac", lo=0, hi=1, hi_open=True, fix="e.g. 0.1 (0: no calibration)")
    parse_edges(edges)
    head_list = parse_heads(heads)
    if init_from is not None and not (init_from / "config.json").is_file():
        raise LlmplanError(
            f"--init-from {init_from} is not a saved length predictor (no config.json); "
            "train one with `llmplan predict train --out DIR`"
        )
    kind = kind.strip().lower()
    if kind not in ("lora", "gbm"):
        raise LlmplanError(f"--kind {kind!r} is not a predictor kind; use lora or gbm")
    _threads(threads)
    ds = load_dataset(data)
    split = split_dataset(ds, test_frac, seed)
    tr = take(split.train, limit, seed)
    if not as_json:
        console.print(
            f"data {ds.source}: {len(ds)} pairs {ds.meta} · train {len(tr)} · tokenizer {ds.tokenizer}"
        )
    data_meta = {"spec": data, "seed": seed, "test_frac": test_frac, "limit": limit}
    if kind == "gbm":
        import time

        from llmplan.predict.baselines import PromptLengthGBM

        t0 = time.monotonic()
        gbm = PromptLengthGBM(tr, parse_edges(edges), seed=seed)
        gbm.save(out, {"data": data_meta, "source": ds.source, "tokenizer": ds.tokenizer})
        summary = {
            "out": str(out),
            "kind": "gbm",
            "data": ds.source,
            "tokenizer": ds.tokenizer,
            "train_examples": len(tr),
            "train_seconds": round(time.monotonic() - t0, 1),
        }
        if as_json:
            print_json(summary)
        else:
            console.print(f"saved to {out}: {summary}")
        return
    cfg = TrainConfig(
        epochs=epochs,
        batch_size=batch_size,
        lr=lr,
        max_length=max_length,
        lora_r=lora_r,
        seed=seed,
        checkpoint_steps=checkpoint_steps,
        max_steps=max_steps,
        time_budget_s=time_budget_min * 60 if time_budget_min else None,
        heads=tuple(head_list),
        calib_frac=calib_frac,
    )
    summary = train(
        tr,
        out,
        base_model=base_model,
        bucket_edges=parse_edges(edges),
        config=cfg,
        resume=resume,
        show_progress=not as_json,
        extra_meta={"data": data_meta},
        init_from=init_from,
    )
    summary = {
        "out": str(out),
        "data": ds.source,
        "tokenizer": ds.tokenizer,
        "train_examples": len(tr),
        **summary,
    }
    if as_json:
        print_json(summary)
    else:
        console.print(f"saved to {out}: {summary}")


@predict_app.command("eval")
def eval_cmd(
    model: Path = typer.Argument(..., help="A directory written by `llmplan predict train`."),
    data: str = typer.Option(None, "--data", help="Default: the data the model was trained on. " + DATA_HELP),
    report_dir: Path = typer.Option(
        None,
        "--report-dir",
        help="Write scores.json, scores.md, confusion.png and confusion.json (the model's row-normalised "
        "confusion matrix on the test split: bench --predictor noisy-cm:DIR/confusion.json) here.",
    ),
    limit_test: int = typer.Option(
        None, "--limit-test", help="Evaluate on a random subset of the test split."
    ),
    latency_n: int = typer.Option(64, "--latency-n", help="Prompts timed for latency (0 to skip)."),
    threads: int = typer.Option(2, "--threads"),
    int8: bool = typer.Option(
        False, "--int8", help="Also score the model with int8 dynamically quantized linears (CPU)."
    ),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Score the model beside a majority-class and a prompt-length LightGBM baseline (trained now) on
    the test split and on the deduplicated test split (prompts seen in training removed): bucket
    accuracy, Spearman/Kendall of the rank score, coverage of the point estimate and of the upper
    bound, over-booking; for a multi-head model also every head's outputs separately."""
    from llmplan.predict.baselines import GBM_META_FILE, MajorityPredictor, PromptLengthGBM
    from llmplan.predict.data import load_dataset, split_dataset, take
    from llmplan.predict.evaluate import evaluate, render_head_table, render_table
    from llmplan.predict.learned import LearnedLengthPredictor

    _threads(threads)
    if (model / GBM_META_FILE).is_file():
        lp = PromptLengthGBM.load(model)
        dmeta = lp.meta.get("data", {})
        learned: list = [lp]
    else:
        lp = LearnedLengthPredictor(model)
        dmeta = lp.meta.get("data", {})
        learned = [lp, LearnedLengthPredictor(model, quantize="int8")] if int8 else [lp]
    ds = load_dataset(data or dmeta.get("spec", "sharegpt"))
    split = split_dataset(ds, dmeta.get("test_frac", 0.2), dmeta.get("seed", 0))
    edges = lp.bucket_edges
    tr = take(split.train, dmeta.get("limit"), dmeta.get("seed", 0))
    splits = {"test": take(split.test, limit_test), "test_dedup": take(split.test_dedup, limit_test)}
    png = report_dir / "confusion.png" if report_dir else None
    confusion: dict = {}
    hrows: list = []
    rows = evaluate(
        [*learned, PromptLengthGBM(tr, edges), MajorityPredictor(tr, edges)],
        splits,
        edges,
        latency_n=latency_n,
        confusion_png=png,
        confusion_out=confusion,
        head_rows=hrows,
    )
    result = {
        "model": str(model),
        "data": ds.source,
        "tokenizer": ds.tokenizer,
        "records": ds.meta,
        "train_examples": len(tr),
        "heads": getattr(lp, "heads", ["bucket"]),
        "calibration": getattr(lp, "calibration", None),
        "scores": [r.row() for r in rows],
        "head_scores": [h.row() for h in hrows],
    }
    if report_dir:
        report_dir.mkdir(parents=True, exist_ok=True)
        (report_dir / "scores.json").write_text(json.dumps(result, indent=2))
        md = render_table(rows) + "\n"
        if hrows:
            md += "\n" + render_head_table(hrows) + "\n"
        (report_dir / "scores.md").write_text(md)
        (report_dir / "confusion.json").write_text(json.dumps(confusion, indent=2))
    if as_json:
        print_json(result)
        return
    console.print(f"data {ds.source} · tokenizer {ds.tokenizer} · train {len(tr)}")
    console.print(render_table(rows), highlight=False)
    if hrows:
        console.print(f"\nper head (heads {', '.join(lp.heads)}):", highlight=False)
        console.print(render_head_table(hrows), highlight=False)
    if png:
        console.print(f"confusion matrix: {png}")


@predict_app.command("query")
def query_cmd(
    prompts: list[str] = typer.Argument(..., help="One or more prompts."),
    predictor: Path = typer.Option(
        None, "--predictor", help="A trained predictor directory (default ./predictor)."
    ),
    model: Path = typer.Option(None, "--model", "-m", hidden=True, help="Deprecated: --predictor."),
    int8: bool = typer.Option(False, "--int8", help="int8 dynamically quantized linears (faster on CPU)."),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Predict the output-length bucket and a representative length for prompts."""
    from llmplan.predict.buckets import bucket_labels
    from llmplan.predict.learned import LearnedLengthPredictor

    model = _predictor_dir(predictor, model)
    _threads(2)
    lp = LearnedLengthPredictor(model, quantize="int8" if int8 else None)
    proba = lp.predict_proba(prompts)
    labels = bucket_labels(lp.bucket_edges)
    rows = []
    for p, pr in zip(prompts, proba, strict=True):
        b = int(pr.argmax())
        rows.append(
            {
                "prompt": p,
                "bucket": b,
                "range": labels[b],
                "length": lp.representatives[b],
                "confidence": round(float(pr[b]), 3),
            }
        )
    if as_json:
        print_json(rows)
        return
    for r in rows:
        console.print(
            f"{r['range']:>12} ~{r['length']} tokens (p={r['confidence']:.2f})  {r['prompt'][:80]}",
            highlight=False,
        )


@predict_app.command("update")
def update_cmd(
    records: Path = typer.Argument(..., help="JSONL of mispredicted requests {prompt, output_tokens}."),
    predictor: Path = typer.Option(
        None, "--predictor", help="The predictor directory to update (default ./predictor)."
    ),
    model: Path = typer.Option(None, "--model", "-m", hidden=True, help="Deprecated: --predictor."),
    out: Path = typer.Option(None, "--out", "-o", help="Save here instead of updating in place."),
    epochs: int = typer.Option(3, "--epochs"),
    lr: float = typer.Option(5e-4, "--lr"),
    threads: int = typer.Option(2, "--threads"),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Fine-tune incrementally on recorded mispredictions (UELLM's online correction)."""
    from llmplan.predict.data import load_jsonl
    from llmplan.predict.train import update
    from llmplan.validate import integer, positive

    integer(epochs, "--epochs", lo=1, hi=10_000)
    positive(lr, "--lr", fix="e.g. --lr 5e-4")
    model = _predictor_dir(predictor, model)
    _threads(threads)
    ds = load_jsonl(records)
    summary = update(model, ds, out, epochs=epochs, lr=lr, show_progress=not as_json)
    summary = {"model": str(out or model), "records": len(ds), **summary}
    if as_json:
        print_json(summary)
    else:
        console.print(f"updated {summary['model']} on {len(ds)} records: {summary}")


def _predictor_dir(predictor: Path | None, model: Path | None) -> Path:
    """--predictor DIR, as serve and bench spell it; --model/-m (which elsewhere names the LLM) is
    the old spelling, accepted with a deprecation line."""
    from llmplan.cli._flags import deprecated
    from llmplan.errors import LlmplanError

    if model is not None:
        if predictor is not None:
            raise LlmplanError("give --predictor DIR once (--model/-m is its old spelling)")
        deprecated(f"--model {model}", f"--predictor {model}")
        return model
    return predictor if predictor is not None else Path("predictor")


def register(app: typer.Typer) -> None:
    app.add_typer(predict_app, name="predict")
