"""Alignment heads for ``lite`` (a stand-in for CLIP, NOT CLIP): map the frozen EfficientNet-Lite0 image
features and the frozen MiniLM text features into one space, learned from the catalog's own image-text pairs.
The backbones are never touched; only these heads learn. Two methods: ``infonce`` (two heads trained with a
symmetric InfoNCE loss, linear or MLP) and ``cca`` (ridge-regularised CCA: two linear heads in closed form).
``cca`` is the default because it measured better on ML-100K posters (docs/encoders.md has the numbers).

Stored in ``STORE/lite.align.safetensors`` (weights + JSON spec in the metadata); applied with numpy, so
reading a store never needs torch. ``train_heads`` is also what mismatch detection uses for its cross-fitted
(held-out) scoring.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from clip4rec.config import AlignConfig
from clip4rec.encode import safetensors_io as st


def as_spec(options: AlignConfig | dict[str, Any] | None) -> dict[str, Any]:
    """The heads' spec as stored in the align file: every AlignConfig key, validated."""
    config = options if isinstance(options, AlignConfig) else AlignConfig.model_validate(options or {})
    return config.model_dump()


@dataclass
class AlignmentHeads:
    spec: dict[str, Any]
    weights: dict[str, np.ndarray] = field(default_factory=dict)

    @property
    def inputs(self) -> dict[str, list[str]]:
        return {"image": list(self.spec["image_inputs"]), "text": list(self.spec["text_inputs"])}

    def project(self, side: str, feats: dict[str, np.ndarray]) -> np.ndarray:
        x = np.concatenate([np.asarray(feats[m], np.float32) for m in self.inputs[side]], axis=1)
        x = (x - self.weights[f"{side}.mean"]) / self.weights[f"{side}.std"]
        if self.spec["arch"] == "mlp":
            h = x @ self.weights[f"{side}.w1"].T + self.weights[f"{side}.b1"]
            h = _gelu(h)
            y = h @ self.weights[f"{side}.w2"].T + self.weights[f"{side}.b2"]
        else:
            y = x @ self.weights[f"{side}.w1"].T + self.weights[f"{side}.b1"]
        norm = np.linalg.norm(y, axis=1, keepdims=True)
        return (y / np.where(norm > 0, norm, 1.0)).astype(np.float32)

    def save(self, path: str | os.PathLike[str], extra: dict[str, Any] | None = None) -> None:
        meta = {"spec": json.dumps(self.spec), **({"info": json.dumps(extra, default=str)} if extra else {})}
        st.save(path, {k: np.ascontiguousarray(v, np.float32) for k, v in sorted(self.weights.items())}, meta)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> "AlignmentHeads":
        if not Path(path).is_file():
            raise FileNotFoundError(f"{path}: no alignment heads (re-run `clip4rec encode` with the lite encoder)")
        tensors, meta = st.load(path)
        return cls(json.loads(meta["spec"]), dict(tensors))


def _gelu(x: np.ndarray) -> np.ndarray:
    from scipy.special import erf
    return (0.5 * x * (1.0 + erf(x / np.sqrt(2.0)))).astype(np.float32)


def train_heads(image_feats: dict[str, np.ndarray], text_feats: dict[str, np.ndarray],
                options: AlignConfig | dict[str, Any] | None = None) -> tuple[AlignmentHeads, dict[str, Any]]:
    """Train image/text heads on aligned rows (row i of each = one item's pair): CCA, or symmetric InfoNCE.

    ``options``: an AlignConfig, or a stored spec (a dict with its keys, as AlignmentHeads.spec holds)."""
    import torch

    spec = as_spec(options)
    if spec["method"] == "cca":
        return _train_cca(image_feats, text_feats, spec)
    g = torch.Generator().manual_seed(int(spec["seed"]))
    torch.manual_seed(int(spec["seed"]))
    xs, weights = {}, {}
    for side, feats in (("image", image_feats), ("text", text_feats)):
        x = np.concatenate([np.asarray(feats[m], np.float32) for m in spec[f"{side}_inputs"]], axis=1)
        mean, std = x.mean(0), x.std(0) + 1e-6
        weights[f"{side}.mean"], weights[f"{side}.std"] = mean.astype(np.float32), std.astype(np.float32)
        xs[side] = torch.from_numpy(((x - mean) / std).astype(np.float32))
    n = xs["image"].shape[0]
    if n < 2:
        raise ValueError("alignment needs at least 2 items with both an image and a text")

    def head(d_in: int) -> torch.nn.Module:
        drop = torch.nn.Dropout(float(spec["dropout"]))
        if spec["arch"] == "mlp":
            return torch.nn.Sequential(drop, torch.nn.Linear(d_in, int(spec["hidden"])), torch.nn.GELU(),
                                       torch.nn.Linear(int(spec["hidden"]), int(spec["out_dim"])))
        return torch.nn.Sequential(drop, torch.nn.Linear(d_in, int(spec["out_dim"])))

    heads = torch.nn.ModuleDict({s: head(xs[s].shape[1]) for s in ("image", "text")})
    log_scale = torch.nn.Parameter(torch.tensor(float(np.log(1.0 / spec["temperature"]))))
    opt = torch.optim.AdamW(list(heads.parameters()) + [log_scale], lr=float(spec["lr"]),
                            weight_decay=float(spec["weight_decay"]))
    batch = int(spec["batch"]) or n
    losses = []
    heads.train()
    for epoch in range(int(spec["epochs"])):
        order = torch.randperm(n, generator=g) if batch < n else torch.arange(n)
        for s in range(0, n, batch):
            idx = order[s:s + batch]
            if len(idx) < 2:
                continue
            zi = torch.nn.functional.normalize(heads["image"](xs["image"][idx]), dim=-1)
            zt = torch.nn.functional.normalize(heads["text"](xs["text"][idx]), dim=-1)
            logits = log_scale.clamp(max=np.log(100.0)).exp() * zi @ zt.T
            target = torch.arange(len(idx))
            loss = 0.5 * (torch.nn.functional.cross_entropy(logits, target)
                          + torch.nn.functional.cross_entropy(logits.T, target))
            opt.zero_grad()
            loss.backward()
            opt.step()
        losses.append(float(loss.detach()))
    heads.eval()
    for side in ("image", "text"):
        layers = [m for m in heads[side] if isinstance(m, torch.nn.Linear)]
        weights[f"{side}.w1"], weights[f"{side}.b1"] = (layers[0].weight.detach().numpy().copy(),
                                                        layers[0].bias.detach().numpy().copy())
        if spec["arch"] == "mlp":
            weights[f"{side}.w2"], weights[f"{side}.b2"] = (layers[1].weight.detach().numpy().copy(),
                                                            layers[1].bias.detach().numpy().copy())
    info = {"pairs": n, "final_loss": losses[-1] if losses else None,
            "temperature": float(1.0 / log_scale.detach().exp())}
    return AlignmentHeads(spec, weights), info


def _train_cca(image_feats: dict[str, np.ndarray], text_feats: dict[str, np.ndarray],
               spec: dict[str, Any]) -> tuple[AlignmentHeads, dict[str, Any]]:
    """Ridge-regularised CCA: linear heads, closed form, deterministic.

    Each side is standardised, reduced to its top ``cca_pca`` principal components and whitened with a ridge
    (``cca_reg`` x mean eigenvalue) so that noise directions are not blown up; the SVD of the whitened
    cross-covariance gives the paired directions. The image side is scaled by the canonical correlations so
    that well-correlated directions count more in the cosine.
    """
    weights: dict[str, np.ndarray] = {}
    zs = {}
    for side, feats in (("image", image_feats), ("text", text_feats)):
        x = np.concatenate([np.asarray(feats[m], np.float64) for m in spec[f"{side}_inputs"]], axis=1)
        mean, std = x.mean(0), x.std(0) + 1e-6
        weights[f"{side}.mean"], weights[f"{side}.std"] = mean.astype(np.float32), std.astype(np.float32)
        zs[side] = (x - mean) / std
    n = zs["image"].shape[0]
    if n < 3:
        raise ValueError("alignment needs at least 3 items with both an image and a text")

    def whitener(z: np.ndarray) -> np.ndarray:
        _, s, vt = np.linalg.svd(z, full_matrices=False)
        d = min(int(spec["cca_pca"]), len(s))
        ev = (s[:d] ** 2) / len(z)
        return vt[:d].T / np.sqrt(ev + float(spec["cca_reg"]) * ev.mean())

    wx, wy = whitener(zs["image"]), whitener(zs["text"])
    cross = (zs["image"] @ wx).T @ (zs["text"] @ wy) / n
    u, corr, vt = np.linalg.svd(cross)
    k = min(int(spec["cca_dim"]), len(corr))
    a = (wx @ u[:, :k]) * corr[:k]
    b = wy @ vt[:k].T
    weights["image.w1"], weights["image.b1"] = a.T.astype(np.float32), np.zeros(k, np.float32)
    weights["text.w1"], weights["text.b1"] = b.T.astype(np.float32), np.zeros(k, np.float32)
    spec = {**spec, "arch": "linear"}
    return AlignmentHeads(spec, weights), {"pairs": n, "canonical_correlations": corr[:k].round(4).tolist(),
                                           "temperature": None, "final_loss": None}
