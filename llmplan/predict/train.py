"""Fine-tune the LoRA length classifier: rich progress bar, checkpoints, resume, incremental update.

Checkpoints go to ``<out>/checkpoint/`` every ``checkpoint_steps`` optimizer steps and at the end of
every epoch (adapter, head, optimizer state, position). ``resume=True`` continues from there with the
same data order, so an interrupted run ends with the same model as an uninterrupted one.
"""

from __future__ import annotations

import json
import random
import shutil
import time
from collections.abc import Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from llmplan.errors import LlmplanError
from llmplan.predict.buckets import bucket_medians, bucket_of, validate_edges
from llmplan.predict.data import LengthDataset, load_jsonl, take
from llmplan.predict.interface import DEFAULT_BUCKET_EDGES
from llmplan.predict.model import (
    QUANTILES,
    LengthClassifier,
    ModelConfig,
    build_model,
    load_model,
    load_tokenizer,
    parse_heads,
    resolve_base_model,
    save_model,
)


@dataclass(slots=True)
class TrainConfig:
    epochs: int = 1
    batch_size: int = 16
    lr: float = 1e-3  # LoRA and head; high because only ~0.3M parameters train
    weight_decay: float = 0.01
    max_length: int = 128
    lora_r: int = 8
    seed: int = 0
    checkpoint_steps: int = 100
    max_steps: int | None = None  # stop early (tests, time-boxed runs)
    time_budget_s: float | None = None  # stop (with a checkpoint) once training has run this long
    class_weighting: bool = False
    heads: tuple[str, ...] = ("bucket", "rank", "quantile")  # see model.parse_heads
    rank_weight: float = 1.0  # RankNet loss weight beside the bucket cross-entropy
    quantile_weight: float = 1.0  # pinball loss weight (summed over p50 and p90)
    calib_frac: float = 0.1  # share of the training groups held out to calibrate the quantiles
    # Warm start (train(..., init_from=DIR)): keep DIR's encoder and bucket head frozen and fit only
    # the rank/quantile heads on its pooled features, computed once: minutes instead of an epoch.
    head_epochs: int = 40
    head_lr: float = 1e-2
    head_batch_size: int = 64


def encode(tok: Any, texts: Sequence[str], max_length: int) -> dict[str, torch.Tensor]:
    """Tokenize without truncation (to know the true length), then keep the first ``max_length``
    ids, ending with the tokenizer's closing special token when it has one."""
    enc = tok(list(texts), add_special_tokens=True, truncation=False)["input_ids"]
    n_tokens = torch.tensor([len(ids) for ids in enc])
    clipped = [ids if len(ids) <= max_length else ids[: max_length - 1] + ids[-1:] for ids in enc]
    width = max(len(ids) for ids in clipped)
    pad = tok.pad_token_id or 0
    input_ids = torch.full((len(clipped), width), pad, dtype=torch.long)
    mask = torch.zeros((len(clipped), width), dtype=torch.long)
    for i, ids in enumerate(clipped):
        input_ids[i, : len(ids)] = torch.tensor(ids)
        mask[i, : len(ids)] = 1
    return {"input_ids": input_ids, "attention_mask": mask, "n_tokens": n_tokens}


@torch.inference_mode()
def head_outputs(
    model: LengthClassifier, tok: Any, texts: Sequence[str], max_length: int, batch_size: int = 32
) -> dict[str, np.ndarray]:
    """Every head's output for ``texts`` (batched, sorted by length to cut padding): ``proba``
    (n, buckets) and, when the model has them, ``rank`` (n,) and ``quantile`` (n, 2) in log(1+tokens)."""
    was_training = model.training
    model.eval()
    n = len(texts)
    out: dict[str, np.ndarray] = {"proba": np.zeros((n, model.head.out_features), dtype=np.float32)}
    if "rank" in model.extra:
        out["rank"] = np.zeros(n, dtype=np.float32)
    if "quantile" in model.extra:
        out["quantile"] = np.zeros((n, len(QUANTILES)), dtype=np.float32)
    order = np.argsort([len(t) for t in texts], kind="stable")
    for s in range(0, n, batch_size):
        idx = order[s : s + batch_size]
        batch = encode(tok, [texts[i] for i in idx], max_length)
        res = model.forward_all(**batch)
        out["proba"][idx] = torch.softmax(res["bucket"], dim=-1).float().numpy()
        for k in ("rank", "quantile"):
            if k in res:
                out[k][idx] = res[k].float().numpy()
    if was_training:
        model.train()
    return out


CALIBRATION_FILE = "calibration.json"
CALIB_SET_FILE = "calib.jsonl"


def conformal_offsets(
    pred_log: np.ndarray, log_len: np.ndarray, quantiles: Sequence[float] = QUANTILES
) -> dict[str, Any]:
    """Split-conformal calibration of quantile predictions (log space): for quantile q the offset is
    the ceil((n+1) q)-th smallest residual ``y - pred``, so that ``pred + offset`` covers a fresh
    example with probability >= q (exchangeability); also returns the coverage before and after."""
    n = len(log_len)
    offsets, before, after = [], [], []
    for k, q in enumerate(quantiles):
        res = np.sort(log_len - pred_log[:, k])
        rank = min(n, int(np.ceil((n + 1) * q)))
        off = float(res[rank - 1])
        offsets.append(off)
        before.append(float(np.mean(log_len <= pred_log[:, k])))
        after.append(float(np.mean(log_len <= pred_log[:, k] + off)))
    return {
        "quantiles": list(quantiles),
        "offsets_log": offsets,
        "n": n,
        "coverage_before": before,
        "coverage_after": after,
    }


def calibrate(
    model: LengthClassifier, tok: Any, cfg: ModelConfig, ds: LengthDataset, out: Path
) -> dict[str, Any]:
    """Fit the conformal offsets of the quantile head on ``ds`` (held out from training) and save
    them to ``out/calibration.json``."""
    heads = head_outputs(model, tok, ds.prompts, cfg.max_length)
    log_len = np.log1p(np.asarray(ds.output_tokens, dtype=np.float64))
    cal = {**conformal_offsets(heads["quantile"].astype(np.float64), log_len), "source": ds.source}
    (out / CALIBRATION_FILE).write_text(json.dumps(cal, indent=2))
    return cal


def _group_frac(group: str, seed: int) -> float:
    import hashlib

    h = hashlib.sha256(f"calib:{seed}:{group}".encode()).digest()
    return int.from_bytes(h[:8], "big") / 2**64


def split_calibration(ds: LengthDataset, frac: float, seed: int) -> tuple[LengthDataset, LengthDataset]:
    """Hold out ``frac`` of the conversation groups (hash of seed and group, like the test split)."""
    fit, cal = [], []
    for e in ds.examples:
        (cal if _group_frac(e.group, seed) < frac else fit).append(e)
    return ds.subset(fit, calib_split="fit"), ds.subset(cal, calib_split="calibration")


MIN_CALIBRATION = 10  # fewer held-out examples than this: train on everything, leave uncalibrated


def _write_examples(path: Path, ds: LengthDataset) -> None:
    with path.open("w", encoding="utf-8") as fh:
        for e in ds.examples:
            row = {
                "id": e.uid,
                "prompt": e.prompt,
                "prompt_tokens": e.prompt_tokens,
                "output_tokens": e.output_tokens,
            }
            fh.write(json.dumps(row, ensure_ascii=False) + "\n")


def ranknet_loss(scores: torch.Tensor, log_len: torch.Tensor) -> torch.Tensor:
    """Pairwise logistic (RankNet) loss over every pair in the batch whose lengths differ:
    ``log(1 + exp(-(s_i - s_j)))`` for each pair with ``len_i > len_j``. Zero when no pair differs."""
    ds = scores[:, None] - scores[None, :]
    longer = (log_len[:, None] - log_len[None, :]) > 1e-6
    if not bool(longer.any()):
        return scores.sum() * 0.0
    return nn.functional.softplus(-ds[longer]).mean()


def pinball_loss(
    pred: torch.Tensor, log_len: torch.Tensor, quantiles: Sequence[float] = QUANTILES
) -> torch.Tensor:
    """Quantile (pinball) loss of ``pred`` (n, len(quantiles)) against ``log_len`` (n,), summed
    over the quantiles and averaged over items."""
    q = torch.as_tensor(quantiles, dtype=pred.dtype)
    err = log_len[:, None] - pred
    return torch.maximum(q * err, (q - 1) * err).sum(dim=1).mean()


def _loss(
    model: LengthClassifier,
    batch: dict[str, torch.Tensor],
    labels: torch.Tensor,
    log_len: torch.Tensor,
    tcfg: TrainConfig,
    ce: nn.Module,
) -> torch.Tensor:
    if not len(model.extra):
        return ce(model(**batch), labels)
    out = model.forward_all(**batch)
    loss = ce(out["bucket"], labels)
    if "rank" in out:
        loss = loss + tcfg.rank_weight * ranknet_loss(out["rank"], log_len)
    if "quantile" in out:
        loss = loss + tcfg.quantile_weight * pinball_loss(out["quantile"], log_len)
    return loss


def _init_quantile_head(model: LengthClassifier, ds: LengthDataset) -> None:
    """Start the quantile head at the training data's p50 / p90 of log length: with lr 1e-3 a bias
    would otherwise need thousands of steps to climb from 0 to ~5.5 (250 tokens)."""
    logy = np.log1p(np.asarray(ds.output_tokens, dtype=np.float64))
    p50, p90 = np.quantile(logy, [0.5, 0.9])
    with torch.no_grad():
        lin = model.extra["quantile"]
        lin.weight.mul_(0.1)
        lin.bias.copy_(torch.tensor([p50, np.log(np.expm1(max(p90 - p50, 1e-3)))]))


def _fit_heads_frozen(
    model: LengthClassifier,
    cfg: ModelConfig,
    tcfg: TrainConfig,
    ds: LengthDataset,
    tok: Any,
    show_progress: bool,
) -> dict[str, Any]:
    """Fit only the rank/quantile heads on the frozen encoder's pooled features (computed once)."""
    from llmplan import progress as _progress

    t0 = time.monotonic()
    model.eval()
    n, prompts = len(ds), ds.prompts
    width = model.head.in_features
    feats = np.zeros((n, width), dtype=np.float32)
    order = np.argsort([len(p) for p in prompts], kind="stable")
    bs = 32
    bar_ctx = _progress.task("features", total=n, unit="prompts") if show_progress else nullcontext(None)
    with bar_ctx as bar, torch.inference_mode():
        for s in range(0, n, bs):
            idx = order[s : s + bs]
            feats[idx] = model.features(**encode(tok, [prompts[i] for i in idx], cfg.max_length)).numpy()
            if bar is not None:
                bar.update(completed=min(n, s + bs))
    t_feat = time.monotonic() - t0
    z_all = torch.from_numpy(feats)
    log_len = torch.log1p(torch.as_tensor(ds.output_tokens, dtype=torch.float32))
    for p in model.parameters():
        p.requires_grad_(False)
    params = list(model.extra.parameters())
    for p in params:
        p.requires_grad_(True)
    opt = torch.optim.AdamW(params, lr=tcfg.head_lr, weight_decay=tcfg.weight_decay)
    gen = torch.Generator().manual_seed(tcfg.seed)
    losses: list[float] = []
    steps = 0
    # The time budget does not cut these epochs: over cached features they take seconds, and a
    # stop before the first one would save untrained heads (the forward pass above is the cost).
    for _ in range(tcfg.head_epochs):
        perm = torch.randperm(n, generator=gen)
        for s in range(0, n, tcfg.head_batch_size):
            b = perm[s : s + tcfg.head_batch_size]
            out = model.extra_outputs(z_all[b])
            loss = z_all.new_zeros(())
            if "rank" in out:
                loss = loss + tcfg.rank_weight * ranknet_loss(out["rank"], log_len[b])
            if "quantile" in out:
                loss = loss + tcfg.quantile_weight * pinball_loss(out["quantile"], log_len[b])
            opt.zero_grad()
            loss.backward()
            opt.step()
            steps += 1
            losses.append(float(loss.detach()))
    for p in params:
        p.requires_grad_(False)
    return {
        "steps": steps,
        "total_steps": tcfg.head_epochs * ((n + tcfg.head_batch_size - 1) // tcfg.head_batch_size),
        "final_loss": float(np.mean(losses[-20:])) if losses else None,
        "resumed_from_step": 0,
        "stopped_by_time_budget": False,
        "frozen_encoder": True,
        "feature_seconds": round(t_feat, 1),
        "train_seconds": round(time.monotonic() - t0, 1),
    }


def _epoch_order(n: int, seed: int, epoch: int) -> list[int]:
    order = list(range(n))
    random.Random(seed * 1000 + epoch).shuffle(order)
    return order


def _save_checkpoint(
    ckpt: Path, model: LengthClassifier, cfg: ModelConfig, opt: torch.optim.Optimizer, pos: dict[str, int]
) -> None:
    tmp = ckpt.with_name(ckpt.name + ".tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    save_model(model, cfg, tmp, {"position": pos})
    torch.save({"optimizer": opt.state_dict(), "rng": torch.get_rng_state()}, tmp / "optimizer.pt")
    # Swap in whole so a kill mid-write never leaves a half checkpoint behind.
    if ckpt.exists():
        shutil.rmtree(ckpt)
    tmp.rename(ckpt)


def _fit(
    model: LengthClassifier,
    cfg: ModelConfig,
    tcfg: TrainConfig,
    ds: LengthDataset,
    tok: Any,
    out: Path,
    resume: bool,
    desc: str,
    show_progress: bool,
) -> dict[str, Any]:
    torch.manual_seed(tcfg.seed)
    labels = torch.as_tensor(bucket_of(ds.output_tokens, cfg.bucket_edges))
    log_len = torch.log1p(torch.as_tensor(ds.output_tokens, dtype=torch.float32))
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=tcfg.lr, weight_decay=tcfg.weight_decay)
    weight = None
    if tcfg.class_weighting:
        counts = torch.bincount(labels, minlength=len(cfg.bucket_edges)).float().clamp(min=1)
        weight = (counts.sum() / counts) / (counts.sum() / counts).mean()
    loss_fn = nn.CrossEntropyLoss(weight=weight)
    n = len(ds)
    steps_per_epoch = (n + tcfg.batch_size - 1) // tcfg.batch_size
    total = steps_per_epoch * tcfg.epochs
    if tcfg.max_steps is not None:
        total = min(total, tcfg.max_steps)
    ckpt = out / "checkpoint"
    start_epoch, start_step, done = 0, 0, 0
    if resume and (ckpt / "config.json").is_file():
        pos = json.loads((ckpt / "config.json").read_text())["position"]
        loaded, _, _ = load_model(ckpt)
        model.load_state_dict(loaded.state_dict())
        state = torch.load(ckpt / "optimizer.pt", weights_only=True)
        opt.load_state_dict(state["optimizer"])
        torch.set_rng_state(state["rng"])  # dropout masks continue as if never interrupted
        start_epoch, start_step, done = pos["epoch"], pos["step"], pos["done"]
    prompts = ds.prompts
    losses: list[float] = []
    t_start = time.monotonic()
    stopped_early = False
    model.train()
    from llmplan import progress as _progress

    bar_ctx = _progress.task(desc, total=total, unit="steps") if show_progress else nullcontext(None)
    bar = bar_ctx.__enter__()
    if bar is not None:
        bar.update(completed=done)
    try:
        for epoch in range(start_epoch, tcfg.epochs):
            order = _epoch_order(n, tcfg.seed, epoch)
            first = start_step if epoch == start_epoch else 0
            for step in range(first, steps_per_epoch):
                if done >= total or (
                    tcfg.time_budget_s is not None and time.monotonic() - t_start > tcfg.time_budget_s
                ):
                    stopped_early = done < total
                    break
                idx = order[step * tcfg.batch_size : (step + 1) * tcfg.batch_size]
                batch = encode(tok, [prompts[i] for i in idx], cfg.max_length)
                loss = _loss(model, batch, labels[idx], log_len[idx], tcfg, loss_fn)
                opt.zero_grad()
                loss.backward()
                torch.nn.utils.clip_grad_norm_(params, 1.0)
                opt.step()
                done += 1
                losses.append(float(loss.detach()))
                if bar is not None:
                    bar.update(completed=done, description=f"{desc} loss {np.mean(losses[-20:]):.3f}")
                at_epoch_end = step + 1 == steps_per_epoch
                if done % tcfg.checkpoint_steps == 0 or at_epoch_end or done >= total:
                    nxt = (
                        {"epoch": epoch + 1, "step": 0}
                        if at_epoch_end
                        else {"epoch": epoch, "step": step + 1}
                    )
                    _save_checkpoint(ckpt, model, cfg, opt, {**nxt, "done": done})
            if done >= total or stopped_early:
                if stopped_early:
                    _save_checkpoint(ckpt, model, cfg, opt, {"epoch": epoch, "step": step, "done": done})
                break
    finally:
        bar_ctx.__exit__(None, None, None)
    model.eval()
    return {
        "steps": done,
        "total_steps": total,
        "final_loss": float(np.mean(losses[-20:])) if losses else None,
        "resumed_from_step": done - len(losses) if resume else 0,
        "stopped_by_time_budget": stopped_early,
        "train_seconds": round(time.monotonic() - t_start, 1),
    }


def train(
    ds: LengthDataset,
    out: str | Path,
    *,
    base_model: str | None = None,
    bucket_edges: Sequence[int] = DEFAULT_BUCKET_EDGES,
    config: TrainConfig | None = None,
    resume: bool = False,
    show_progress: bool = True,
    extra_meta: dict[str, Any] | None = None,
    init_from: str | Path | None = None,
) -> dict[str, Any]:
    """Train a predictor on ``ds`` and save it to ``out``; returns a summary dict.

    ``init_from``: a saved predictor whose encoder (LoRA merged weights as saved) and bucket head are
    kept frozen; only the rank/quantile heads are fitted, on its pooled features (its bucket edges,
    max length and representatives are kept). The calibration split is still held out of that fit,
    but ``init_from``'s own training may have seen it: check the coverage on test."""
    if len(ds) == 0:
        raise LlmplanError("the training set is empty; pass a dataset with at least one example")
    tcfg = config or TrainConfig()
    out = Path(out)
    edges = validate_edges(bucket_edges)
    heads = parse_heads(tcfg.heads)
    calib: LengthDataset | None = None
    if "quantile" in heads and tcfg.calib_frac > 0:
        fit, held = split_calibration(ds, tcfg.calib_frac, tcfg.seed)
        if len(held) >= MIN_CALIBRATION and len(fit):
            ds, calib = fit, held
    cfg = ModelConfig(
        base_model=str(resolve_base_model(base_model)),
        bucket_edges=list(edges),
        max_length=tcfg.max_length,
        lora_r=tcfg.lora_r,
        lora_alpha=2 * tcfg.lora_r,
        representatives=bucket_medians(ds.output_tokens, edges),
        heads=heads,
    )
    if resume and (out / "checkpoint" / "config.json").is_file():
        saved = ModelConfig.from_json(json.loads((out / "checkpoint" / "config.json").read_text())["model"])
        if (
            list(saved.bucket_edges) != list(edges)
            or saved.max_length != cfg.max_length
            or list(saved.heads) != heads
        ):
            raise LlmplanError(
                f"{out}/checkpoint was trained with other bucket edges, max length or heads; "
                "pass the same options or drop --resume"
            )
    torch.manual_seed(tcfg.seed)
    if init_from is not None:
        if heads == ["bucket"]:
            raise LlmplanError(
                "--init-from fits the rank/quantile heads; add them: --heads bucket,rank,quantile"
            )
        if resume:
            raise LlmplanError(
                "--init-from fits new heads on a saved model; it has no checkpoint to --resume"
            )
        init, icfg, imeta = load_model(Path(init_from))
        cfg.base_model, cfg.bucket_edges, cfg.max_length = icfg.base_model, icfg.bucket_edges, icfg.max_length
        cfg.lora_r, cfg.lora_alpha, cfg.lora_targets = icfg.lora_r, icfg.lora_alpha, icfg.lora_targets
        cfg.representatives = list(icfg.representatives)
        model = build_model(cfg, adapter_dir=Path(init_from) / "adapter")
        model.head.load_state_dict(init.head.state_dict())
        if "rank" in init.extra and "rank" in model.extra:
            model.extra["rank"].load_state_dict(init.extra["rank"].state_dict())
        del init
    else:
        model = build_model(cfg)
    if "quantile" in model.extra:
        _init_quantile_head(model, ds)
    tok = load_tokenizer(Path(cfg.base_model))
    if init_from is not None:
        summary = _fit_heads_frozen(model, cfg, tcfg, ds, tok, show_progress)
        summary["init_from"] = {"dir": str(init_from), "train": imeta.get("train", {})}
    else:
        summary = _fit(model, cfg, tcfg, ds, tok, out, resume, "train", show_progress)
    summary["heads"] = heads
    extra: dict[str, Any] = {
        "train": {"examples": len(ds), "source": ds.source, "tokenizer": ds.tokenizer, **summary},
        **(extra_meta or {}),
    }
    save_model(model, cfg, out, extra)
    if calib is not None:
        cal = calibrate(model, tok, cfg, calib, out)
        _write_examples(out / CALIB_SET_FILE, calib)
        summary["calibration"] = {
            "n": cal["n"],
            "offsets_log": [round(o, 4) for o in cal["offsets_log"]],
            "coverage_before": [round(c, 4) for c in cal["coverage_before"]],
        }
    elif (out / CALIBRATION_FILE).exists():
        (out / CALIBRATION_FILE).unlink()  # a stale file from an earlier model in this directory
    _write_replay(out / REPLAY_FILE, ds, tcfg.seed)
    return summary


REPLAY_FILE = "replay.jsonl"
REPLAY_SIZE = 512


def _write_replay(path: Path, ds: LengthDataset, seed: int) -> None:
    """Keep a small random sample of the training data beside the model: updates mix it with the new
    records so that fine-tuning on a shifted slice does not erase what the model knew."""
    _write_examples(path, take(ds, REPLAY_SIZE, seed))


def update(
    model_dir: str | Path,
    ds: LengthDataset,
    out: str | Path | None = None,
    *,
    epochs: int = 3,
    lr: float = 5e-4,
    batch_size: int = 8,
    seed: int = 0,
    replay_ratio: float = 1.0,
    show_progress: bool = True,
) -> dict[str, Any]:
    """Online correction (UELLM 3.3.3): continue fine-tuning a saved predictor on recorded
    (prompt, actual length) pairs of mispredicted requests, and save it (in place by default).

    ``replay_ratio`` x len(records) examples from the model's replay sample are mixed in (0 disables).
    """
    if len(ds) == 0:
        raise LlmplanError("no recorded mispredictions to learn from; record some with MispredictionRecorder")
    model_dir = Path(model_dir)
    out = Path(out) if out is not None else model_dir
    model, cfg, meta = load_model(model_dir)
    tok = load_tokenizer(Path(cfg.base_model))
    tcfg = TrainConfig(
        epochs=epochs,
        lr=lr,
        batch_size=batch_size,
        seed=seed,
        max_length=cfg.max_length,
        checkpoint_steps=10**9,
    )
    replay_path = model_dir / REPLAY_FILE
    n_replay = 0
    if replay_ratio > 0 and replay_path.is_file():
        replay = take(load_jsonl(replay_path), int(round(replay_ratio * len(ds))), seed)
        n_replay = len(replay)
        ds = ds.subset(ds.examples + replay.examples)
    work = out / ".update"
    summary = _fit(model, cfg, tcfg, ds, tok, work, False, "update", show_progress)
    summary["replayed"] = n_replay
    out.mkdir(parents=True, exist_ok=True)
    if replay_path.is_file() and out != model_dir:
        shutil.copyfile(replay_path, out / REPLAY_FILE)
    shutil.rmtree(work, ignore_errors=True)
    calib_path = model_dir / CALIB_SET_FILE
    if "quantile" in model.extra and calib_path.is_file():
        # Re-fit the conformal offsets on the held-out calibration set: the update moved the heads.
        cal = calibrate(model, tok, cfg, load_jsonl(calib_path), out)
        if out != model_dir:
            shutil.copyfile(calib_path, out / CALIB_SET_FILE)
        summary["calibration"] = {"n": cal["n"], "offsets_log": [round(o, 4) for o in cal["offsets_log"]]}
    meta.setdefault("updates", []).append({"examples": len(ds), "source": ds.source, **summary})
    save_model(model, cfg, out, meta)
    return summary
