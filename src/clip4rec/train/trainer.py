"""Training loop: next-item full-softmax cross-entropy, early stopping on validation NDCG@10,
a checkpoint every epoch (a killed run resumes from the last one), best weights kept in safetensors."""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import save_file
from tqdm import tqdm

from clip4rec.config import Config
from clip4rec.data.splits import Split
from clip4rec.files import atomic_write
from clip4rec.model.artifact import WEIGHTS as BEST_WEIGHTS
from clip4rec.model.build import seed_everything
from clip4rec.model.recommender import SequentialRecommender, pad_right
from clip4rec.ranking import case_metrics, rank_cases
from clip4rec.train.calibrate import cold_floor_cases, fit_cold_boost, fit_content_weight

CHECKPOINT = "checkpoint.pt"


Window = tuple[np.ndarray, int]  # (items, how many leading targets serve as context only)


def training_windows(sequences: list[np.ndarray], max_len: int, rng: np.random.Generator | None = None,
                     min_context: int = 0) -> list[Window]:
    """Cut each training sequence into windows of at most max_len+1 items, from the end backwards.

    Every next-item target is trained on exactly once per epoch (inputs = window[:-1], targets = window[1:]).
    With min_context = c > 0, windows overlap by c extra items whose targets are context only, so every
    target after a sequence's first c+1 items is predicted from at least c earlier items, closer to what the
    model sees at test time (the last max_len items); it costs up to max_len / (max_len - c) more compute.
    With `rng`, the cut points shift by a random offset each epoch, so over epochs every target is seen with
    contexts of many lengths.
    """
    if not 0 <= min_context < max_len:
        raise ValueError(f"min_context must be in [0, max_len), got {min_context}")
    step = max_len - min_context  # counted targets per full window
    windows: list[Window] = []
    for seq in sequences:
        hi = len(seq)  # targets at positions < hi are not covered yet (position 0 is never a target)
        count = int(rng.integers(0, step)) if rng is not None and hi > max_len + 1 else step
        if count == 0:  # no short first window this epoch; the target-less window keeps earlier runs' shuffles
            windows.append((seq[hi - 1:hi], 0))
            count = step
        while hi > 1:
            lo = max(1, hi - count)
            start = max(0, lo - 1 - min_context)
            windows.append((seq[start:hi], lo - start - 1))
            hi, count = lo, step
    return windows


def target_batches(windows: list[Window], batch_size: int, rng: np.random.Generator | None = None,
                   pool_batches: int = 64) -> list[list[Window]]:
    """Group windows so each optimizer step sees about `batch_size` next-item targets.

    Counting targets rather than sequences makes `batch_size` mean what it means in RecBole (one target per
    training sample), whatever the sequence lengths. With `rng`, windows (already shuffled) are sorted by
    length inside pools of ~`pool_batches` batches and the batches are shuffled again: batches hold windows
    of similar length, so little compute goes to padding on long-tailed data such as Amazon Beauty.
    """
    def cut(ordered: list[Window]) -> list[list[Window]]:
        out, current, count = [], [], 0
        for window in ordered:
            current.append(window)
            count += len(window[0]) - 1 - window[1]
            if count >= batch_size:
                out.append(current)
                current, count = [], 0
        if current:
            out.append(current)
        return out

    if rng is None:
        return cut(windows)
    pool_targets = batch_size * pool_batches
    batches, pool, count = [], [], 0
    for window in windows + [None]:  # None flushes the last pool
        if window is not None:
            pool.append(window)
            count += len(window[0]) - 1 - window[1]
        if pool and (window is None or count >= pool_targets):
            batches += cut(sorted(pool, key=lambda w: len(w[0])))
            pool, count = [], 0
    order = rng.permutation(len(batches))
    return [batches[i] for i in order]


@dataclass
class TrainResult:
    best_epoch: int
    best_valid_ndcg10: float
    epochs_run: int
    seconds_per_epoch: float
    train_seconds: float
    stopped_by: str
    history: list[dict[str, Any]]
    content_weight: dict[str, Any] | None = None  # train.calibrate.fit_content_weight's record
    cold_boost: dict[str, Any] | None = None      # train.calibrate.fit_cold_boost's record (model.cold_floor)


def resolve_device(name: str) -> torch.device:
    """The training device. On CUDA, deterministic kernels are requested (same seed, same numbers on the same
    GPU model, where every kernel has a deterministic version; torch warns for any that has none)."""
    device = torch.device(name)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"train.device is {name!r} but torch sees no CUDA device "
                             f"(torch {torch.__version__}); use --device cpu")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ValueError(f"train.device is {name!r} but only {torch.cuda.device_count()} CUDA device(s) exist")
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # cuBLAS needs it for determinism
        torch.use_deterministic_algorithms(True, warn_only=True)
    return device


def validation_ndcg10(model: SequentialRecommender, split: Split, batch_size: int, exclude_seen: bool) -> float:
    model.eval()
    table = model.item_table().detach()
    rankings = rank_cases(lambda hs: model.score(hs, table), split.valid.histories, split.valid.targets,
                          split.n_items, exclude_seen=exclude_seen, depth=10, batch_size=batch_size)
    return float(case_metrics(rankings.ranks, ks=(10,))["ndcg@10"].mean())


def train_model(model: SequentialRecommender, split: Split, config: Config, run_dir: Path,
                progress: bool = True) -> TrainResult:
    """Train in place; on return `model` holds the best-validation weights (also in run_dir/model.safetensors)."""
    tcfg = config.train
    if tcfg.threads:
        torch.set_num_threads(tcfg.threads)
    device = resolve_device(tcfg.device)
    seed_everything(config.seed)
    cold_column = getattr(model.item_side, "cold_column", False)
    if cold_column:  # before any training: a split it cannot be fitted on is an error now, not after hours
        cold_floor_cases(split.train_counts == 0, split.valid)
    model.to(device)
    if not any(p.requires_grad for p in model.parameters()):
        return _fit_training_free(model, split, config, run_dir)
    optimizer = torch.optim.Adam(model.parameters(), lr=tcfg.lr, weight_decay=tcfg.weight_decay)
    if not training_windows(split.train_sequences, config.model.max_len):
        raise ValueError("no training windows: every training sequence is shorter than 2 items")
    state = {"epoch": 0, "best_epoch": 0, "best": -1.0, "bad_epochs": 0, "history": [], "train_seconds": 0.0}
    ckpt_path = run_dir / CHECKPOINT
    if ckpt_path.exists():
        state = _restore(ckpt_path, model, optimizer)
        print(f"resuming from {ckpt_path} after epoch {state['epoch']}")
    held_out = torch.from_numpy(split.cold_items).to(device) if split.cold_items.any() else None
    log_path = run_dir / "train_log.jsonl"
    stopped_by = "max_epochs"
    while state["epoch"] < tcfg.max_epochs:
        if state["bad_epochs"] >= tcfg.patience:
            stopped_by = "early_stopping"
            break
        if tcfg.time_limit_s is not None and state["train_seconds"] >= tcfg.time_limit_s:
            stopped_by = "time_limit"
            break
        epoch = state["epoch"] + 1
        started = time.perf_counter()
        # Per-epoch generator: shuffling depends on (seed, epoch) only, so a resumed run replays identically.
        rng = np.random.default_rng([config.seed, epoch])
        windows = training_windows(split.train_sequences, config.model.max_len, rng, tcfg.min_context)
        order = rng.permutation(len(windows))
        torch.manual_seed(config.seed * 1_000_003 + epoch)
        model.train()
        batches = target_batches([windows[i] for i in order], tcfg.batch_size, rng)
        total = 0.0
        for chunk in tqdm(batches, desc=f"epoch {epoch}", disable=not progress, leave=False, unit="batch"):
            items, mask = pad_right([w for w, _ in chunk], config.model.max_len + 1)
            inputs, targets, in_mask = items[:, :-1], items[:, 1:], mask[:, 1:]
            skip = torch.tensor([k for _, k in chunk])[:, None]
            counted = in_mask & (torch.arange(in_mask.shape[1])[None, :] >= skip)
            loss = model.loss(inputs, targets, in_mask, counted, held_out, exclude_seen=config.eval.exclude_seen)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total += loss.item()
        train_time = time.perf_counter() - started
        ndcg = validation_ndcg10(model, split, config.eval.batch_size, config.eval.exclude_seen)
        epoch_time = time.perf_counter() - started
        state["train_seconds"] += epoch_time
        row = {"epoch": epoch, "loss": total / len(batches), "valid_ndcg@10": ndcg,
               "train_s": round(train_time, 3), "epoch_s": round(epoch_time, 3)}
        state["history"].append(row)
        if ndcg > state["best"]:
            state.update(best=ndcg, best_epoch=epoch, bad_epochs=0)
            _atomic_save_weights(model, run_dir / BEST_WEIGHTS)
        elif epoch > tcfg.warmup_epochs:  # a dip during the warm-up does not use up patience
            state["bad_epochs"] += 1
        state["epoch"] = epoch
        _checkpoint(ckpt_path, model, optimizer, state)
        with log_path.open("a") as log:
            log.write(json.dumps(row) + "\n")
        print(f"epoch {epoch}: loss {row['loss']:.4f}  valid ndcg@10 {ndcg:.4f}  "
              f"{epoch_time:.1f}s{'  *' if state['best_epoch'] == epoch else ''}", flush=True)
    else:
        if state["bad_epochs"] >= tcfg.patience:
            stopped_by = "early_stopping"
    from safetensors.torch import load_file
    model.load_state_dict(load_file(run_dir / BEST_WEIGHTS))
    # The Run saved next holds the fitted weight; a resumed run fits it again to the same value (it is set).
    content_weight = fit_content_weight(model, split.valid, config.eval.exclude_seen, config.eval.batch_size)
    cold_boost = None
    if cold_column:
        cold_boost = fit_cold_boost(model, split.valid, config.model.cold_floor, config.eval.exclude_seen,
                                    config.eval.batch_size)
    epochs = len(state["history"])
    per_epoch = float(np.mean([h["epoch_s"] for h in state["history"]])) if epochs else 0.0
    return TrainResult(state["best_epoch"], state["best"], epochs, per_epoch, state["train_seconds"],
                       stopped_by, state["history"], content_weight, cold_boost)


def _fit_training_free(model: SequentialRecommender, split: Split, config: Config, run_dir: Path) -> TrainResult:
    """A model with nothing to learn (pop, content-knn): its "training" is saving its tables; the validation
    score is recorded as for a trained model, so reports compare both kinds alike."""
    started = time.perf_counter()
    _atomic_save_weights(model, run_dir / BEST_WEIGHTS)
    ndcg = validation_ndcg10(model, split, config.eval.batch_size, config.eval.exclude_seen)
    return TrainResult(0, ndcg, 0, 0.0, time.perf_counter() - started, "training_free", [])


def _atomic_save_weights(model: torch.nn.Module, path: Path) -> None:
    weights = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    atomic_write(path, lambda tmp: save_file(weights, str(tmp)))


def _checkpoint(path: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer, state: dict) -> None:
    blob = {"model": model.state_dict(), "optimizer": optimizer.state_dict(), "state": json.dumps(state)}
    atomic_write(path, lambda tmp: torch.save(blob, tmp))


def _restore(path: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> dict:
    # weights_only: tensors and plain containers only, no arbitrary unpickling. map_location: a checkpoint
    # written on a GPU resumes on a CPU machine (load_state_dict copies onto the model's own device).
    blob = torch.load(path, weights_only=True, map_location="cpu")
    model.load_state_dict(blob["model"])
    optimizer.load_state_dict(blob["optimizer"])
    return json.loads(blob["state"])
