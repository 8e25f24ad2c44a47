"""Train and test ONE RecBole model on exported atomic files. Runs INSIDE the peer venv (.peer-venv), never
in clip4rec's: it imports recbole and nothing from clip4rec.

    .peer-venv/bin/python bench/peer/recbole_worker.py SPEC.json

SPEC.json (written by bench/peer_recbole.py): data_path, dataset, model, params (RecBole config keys),
seed, threads, cap_s, max_epochs, depth, out. Writes into `out`:
  result.json      counts, split hashes, per-epoch validation NDCG@10 + seconds, best epoch, RecBole's own test
                   metrics, what stopped training
  test.run.trec    top-`depth` items per test user (item tokens), for clip4rec's evaluator

Uses recbole.config / recbole.data / recbole.utils directly, never recbole.quick_start (it imports ray).
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import sys
import time
from pathlib import Path

import torch


class CapReached(Exception):
    """Raised before an epoch would start once the wall-clock cap is spent (the best checkpoint is kept)."""


def pairs_hash(users, items) -> str:
    """Same definition as clip4rec.data.splits.EvalCases.pairs_hash: sha256 of the sorted 'user\\titem' lines."""
    pairs = sorted(f"{u}\t{i}" for u, i in zip(users, items))
    return hashlib.sha256("\n".join(pairs).encode()).hexdigest()


def allow_full_unpickling_for(path_of) -> None:
    """RecBole saves its checkpoints with torch.save({... 'config': Config, ...}) and reads them back with a
    plain torch.load. Since torch 2.6 torch.load defaults to weights_only=True, which refuses the pickled
    Config object. We allow full unpickling for exactly the checkpoint this process wrote itself (a trusted
    file in our own work dir) and leave every other torch.load call at the safe default."""
    original = torch.load

    def load(f, *args, **kwargs):
        own = path_of()
        if own is not None and isinstance(f, (str, os.PathLike)) and os.path.abspath(f) == os.path.abspath(own):
            kwargs["weights_only"] = False
        return original(f, *args, **kwargs)

    torch.load = load


def main(spec_path: str) -> None:
    spec = json.loads(Path(spec_path).read_text())
    out = Path(spec["out"]).resolve()
    out.mkdir(parents=True, exist_ok=True)
    os.chdir(out)  # RecBole writes ./log and ./log_tensorboard relative to the working directory
    torch.set_num_threads(int(spec["threads"]))

    from recbole.config import Config
    from recbole.data import create_dataset, data_preparation
    from recbole.utils import get_model, get_trainer, init_logger, init_seed
    # Importing the sequential models runs sine.py, which calls torch.autograd.set_detect_anomaly(True) for the
    # whole process: every backward pass would be ~2x slower. Import them all, then switch it off again.
    import recbole.model.sequential_recommender  # noqa: F401
    torch.autograd.set_detect_anomaly(False)

    params = {
        **spec["params"],
        "data_path": spec["data_path"], "dataset": spec["dataset"], "seed": spec["seed"],
        "epochs": spec["max_epochs"], "checkpoint_dir": str(out / "saved"),
    }
    config = Config(model=spec["model"], dataset=spec["dataset"], config_dict=params)
    init_seed(config["seed"], config["reproducibility"])
    init_logger(config)

    t_load = time.perf_counter()
    dataset = create_dataset(config)
    train_data, valid_data, test_data = data_preparation(config, dataset)
    load_s = time.perf_counter() - t_load
    uid, iid = dataset.uid_field, dataset.iid_field

    def split_pairs(loader):
        feat = loader._dataset.inter_feat
        return (dataset.id2token(uid, feat[uid].numpy()).tolist(), dataset.id2token(iid, feat[iid].numpy()).tolist())

    valid_users, valid_items = split_pairs(valid_data)
    test_users, test_items = split_pairs(test_data)
    n_train = len(train_data._dataset.inter_feat)
    counts = {
        "users": int(dataset.user_num - 1), "items": int(dataset.item_num - 1),  # minus RecBole's [PAD] id 0
        # every interaction except each user's first is exactly one (history -> target) row of train/valid/test
        "interactions": int(n_train + len(valid_users) + len(test_users) + dataset.user_num - 1),
        "train_targets": int(n_train), "valid_cases": len(valid_users), "test_cases": len(test_users),
    }

    init_seed(config["seed"] + config["local_rank"], config["reproducibility"])
    model = get_model(config["model"])(config, train_data._dataset).to(config["device"])
    torch.autograd.set_detect_anomaly(False)  # in case the model import above was the first one
    assert not torch.is_anomaly_enabled()
    n_params = sum(p.numel() for p in model.parameters())

    cap_s = spec.get("cap_s")
    history: list[dict] = []
    base = get_trainer(config["MODEL_TYPE"], config["model"])

    class CappedTrainer(base):
        """Records per-epoch seconds and validation NDCG@10; stops before an epoch once `cap_s` is spent
        (the same rule as clip4rec's train.time_limit_s: the summed epoch seconds, training + validation)."""

        def _train_epoch(self, train_data, epoch_idx, *args, **kwargs):
            spent = sum(h["epoch_s"] for h in history)
            if cap_s is not None and spent >= cap_s:
                raise CapReached
            self._epoch_started = time.perf_counter()
            loss = super()._train_epoch(train_data, epoch_idx, *args, **kwargs)
            self._train_s = time.perf_counter() - self._epoch_started
            self._loss = float(sum(loss) if isinstance(loss, tuple) else loss)
            return loss

        def _valid_epoch(self, valid_data, show_progress=False):
            score, result = super()._valid_epoch(valid_data, show_progress=show_progress)
            epoch_s = time.perf_counter() - self._epoch_started
            history.append({"epoch": len(history) + 1, "loss": self._loss, "valid_ndcg@10": float(score),
                            "train_s": round(self._train_s, 3), "epoch_s": round(epoch_s, 3),
                            "elapsed_s": round(sum(h["epoch_s"] for h in history) + epoch_s, 3)})
            print(f"[peer] {spec['model']} epoch {len(history)}: loss {self._loss:.4f} valid ndcg@10 {score:.4f} "
                  f"{epoch_s:.1f}s", flush=True)
            return score, result

    trainer = CappedTrainer(config, model)
    allow_full_unpickling_for(lambda: trainer.saved_model_file)
    stopped_by = "max_epochs"
    t_fit = time.perf_counter()
    try:
        trainer.fit(train_data, valid_data, saved=True, show_progress=False)
        if len(history) < spec["max_epochs"]:
            stopped_by = "early_stopping"
    except CapReached:
        stopped_by = "time_limit"
    fit_wall_s = time.perf_counter() - t_fit

    test_result = trainer.evaluate(test_data, load_best_model=True, show_progress=False)  # best checkpoint
    own = {k: float(v) for k, v in test_result.items()}

    # Top-`depth` per test user with the same scoring path RecBole's evaluator used (PAD masked, full sort).
    depth = min(int(spec["depth"]), dataset.item_num - 1)
    trainer.model.eval()
    lines = []
    with torch.no_grad():
        for batched in test_data:
            interaction, scores, _, _ = trainer._full_sort_batch_eval(batched)
            top_scores, top_items = torch.topk(scores, depth, dim=-1)
            users = dataset.id2token(uid, interaction[uid].numpy())
            tokens = dataset.id2token(iid, top_items.numpy())
            for u, items, ss in zip(users, tokens, top_scores.tolist()):
                lines += [f"{u} Q0 {it} {r} {s:.9g} recbole-{spec['model']}\n"
                          for r, (it, s) in enumerate(zip(items, ss), start=1)]
    (out / "test.run.trec").write_text("".join(lines))

    best = None  # RecBole's rule (utils.early_stopping): a score >= the best so far becomes the new best
    for h in history:
        if best is None or h["valid_ndcg@10"] >= best["valid_ndcg@10"]:
            best = h
    import recbole
    result = {
        "toolkit": "recbole", "model": spec["model"], "counts": counts,
        "valid_pairs_sha256": pairs_hash(valid_users, valid_items),
        "test_pairs_sha256": pairs_hash(test_users, test_items),
        "history": history,
        "best_epoch": best["epoch"] if best else None,
        "best_valid_ndcg@10": float(trainer.best_valid_score),
        "time_to_best_s": best["elapsed_s"] if best else None,
        "epochs_run": len(history), "stopped_by": stopped_by,
        "seconds_per_epoch": (sum(h["epoch_s"] for h in history) / len(history)) if history else None,
        "train_seconds": sum(h["epoch_s"] for h in history), "fit_wall_s": round(fit_wall_s, 3),
        "data_load_s": round(load_s, 3), "parameters": int(n_params),
        "own_test_metrics": own,
        "own_metric_note": "RecBole's MRR@K is truncated at K (reciprocal rank 0 beyond K)",
        "config": {k: (v if isinstance(v, (int, float, str, bool, type(None), list, dict)) else str(v))
                   for k, v in config.final_config_dict.items()
                   if k in spec["params"] or k in ("model", "dataset", "seed", "epochs", "device")},
        "threads": torch.get_num_threads(), "anomaly_detection": torch.is_anomaly_enabled(),
        "versions": {"recbole": recbole.__version__, "torch": torch.__version__, "python": platform.python_version()},
        "spec": spec,
    }
    tmp = out / "result.json.tmp"
    tmp.write_text(json.dumps(result, indent=2, default=str))
    tmp.replace(out / "result.json")
    print(f"[peer] {spec['model']} done: best epoch {result['best_epoch']}, stopped by {stopped_by}, "
          f"own test ndcg@10 {own.get('ndcg@10')}", flush=True)


if __name__ == "__main__":
    main(sys.argv[1])
