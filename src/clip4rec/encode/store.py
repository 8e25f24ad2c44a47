"""EmbeddingStore: one directory, one safetensors file per (encoder, modality), one manifest.

Layout::

    STORE/manifest.json                     what made each file: encoder, weights identity, settings, dims,
                                            versions, created/updated, counts and ids of bad inputs, last run
    STORE/{encoder}.{modality}.safetensors  tensors: vectors f32 [n,d], mask u8 [n] (1 = usable input),
                                            hash u8 [n,32] (sha256 of the input the row was made from),
                                            item_ids u8 [bytes] (JSON list, row order)
    STORE/{encoder}.align.safetensors       lite only: the learned image/text heads (shared space)
    STORE/.work/                            in-flight shards of a running / killed encode (resume reads them)

Reading (what stage 2 uses)::

    from clip4rec.encode import EmbeddingStore
    store = EmbeddingStore.load("artifacts/store")
    ids, vecs, mask = store.vectors("image")              # encoder inferred when only one has the modality
    ids, vecs, mask = store.vectors("llm_text", encoder="item-llm")
    ids, img, txt, both = store.shared()                  # image/text in one space (CLIP, or lite + heads)

Rows whose input was unusable have mask False and a zero vector; ``store.bad_inputs()`` says why.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from clip4rec.encode import safetensors_io as st
from clip4rec.encode.align import AlignmentHeads
from clip4rec.files import atomic_write

FORMAT_VERSION = 1
MANIFEST = "manifest.json"


class StoreError(ValueError):
    """Not a store, or a store missing what was asked for; the message says what."""


def modality_file(root: Path, encoder: str, modality: str) -> Path:
    return Path(root) / f"{encoder}.{modality}.safetensors"


def align_file(root: Path, encoder: str) -> Path:
    return Path(root) / f"{encoder}.align.safetensors"


def encode_ids(ids: list[str]) -> np.ndarray:
    return np.frombuffer(json.dumps(list(ids), ensure_ascii=False).encode("utf-8"), dtype=np.uint8)


def decode_ids(blob: np.ndarray) -> list[str]:
    return json.loads(bytes(np.asarray(blob, dtype=np.uint8)).decode("utf-8")) if len(blob) else []


def read_manifest(root: str | os.PathLike[str]) -> dict[str, Any]:
    path = Path(root) / MANIFEST
    if not path.is_file():
        return {"format_version": FORMAT_VERSION, "encoders": {}}
    return json.loads(path.read_text(encoding="utf-8"))


def write_manifest(root: str | os.PathLike[str], manifest: dict[str, Any]) -> None:
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    text = json.dumps(manifest, indent=2, default=str, ensure_ascii=False)
    # fsync'd like the store's data files (safetensors_io): after a crash the manifest still describes them.
    atomic_write(root / MANIFEST, lambda tmp: tmp.write_text(text, encoding="utf-8"), fsync=True)


class ModalityFile:
    """One (encoder, modality) file. Mask, hashes and ids (a few bytes per row) are read at once; the vectors
    on demand, all of them (``read_vectors``) or one row at a time (``row``), so that copying the reused rows of
    a large store into its next version keeps memory bounded."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._file = st.open_file(path)
        self.meta: dict[str, str] = dict(self._file.metadata() or {})
        try:
            self.mask = self._file.get_tensor("mask").astype(bool)
            self.hash = self._file.get_tensor("hash")
            self.item_ids = decode_ids(self._file.get_tensor("item_ids"))
            self._vectors = self._file.get_slice("vectors")
        except Exception as err:  # noqa: BLE001 - safetensors raises its own error type for a missing tensor
            raise StoreError(f"{path}: not a store file ({err})") from None
        self.shape = tuple(int(s) for s in self._vectors.get_shape())
        self.reasons: dict[str, str] = json.loads(self.meta.get("reasons", "{}"))
        if len(self.item_ids) != self.shape[0]:
            raise StoreError(f"{path}: {len(self.item_ids)} ids for {self.shape[0]} rows")

    @property
    def fingerprint(self) -> str:
        return self.meta.get("fingerprint", "")

    @property
    def dim(self) -> int:
        return self.shape[1]

    def read_vectors(self) -> np.ndarray:
        """float32 [n, d], in memory."""
        return np.asarray(self._file.get_tensor("vectors"), dtype=np.float32)

    def row(self, i: int) -> np.ndarray:
        return self._vectors[i]


class EmbeddingStore:
    def __init__(self, root: str | os.PathLike[str], manifest: dict[str, Any]) -> None:
        self.root = Path(root)
        self.manifest = manifest

    @classmethod
    def load(cls, root: str | os.PathLike[str]) -> "EmbeddingStore":
        root = Path(root)
        if not (root / MANIFEST).is_file():
            raise StoreError(f"{root} is not an embedding store (no {MANIFEST}); create one with `clip4rec encode`")
        return cls(root, read_manifest(root))

    # ---- what is in it --------------------------------------------------------------------------
    @property
    def encoders(self) -> list[str]:
        return list(self.manifest.get("encoders", {}))

    def entry(self, encoder: str | None = None) -> dict[str, Any]:
        return self.manifest["encoders"][self._encoder(encoder)]

    def modalities(self, encoder: str | None = None) -> list[str]:
        names = self.encoders if encoder is None else [encoder]
        out: list[str] = []
        for name in names:
            entry = self.manifest["encoders"][name]
            out += list(entry.get("dims", {}))
            if entry.get("alignment"):
                out += ["image_shared", "text_shared"]
        return out

    def _encoder(self, encoder: str | None, modality: str | None = None) -> str:
        if encoder is not None:
            if encoder not in self.manifest.get("encoders", {}):
                raise StoreError(f"store {self.root} has no encoder {encoder!r} (has {self.encoders})")
            return encoder
        cands = [e for e in self.encoders if modality is None or modality in self.modalities(e)]
        if len(cands) == 1:
            return cands[0]
        if not cands:
            raise StoreError(f"store {self.root} has no modality {modality!r} (has "
                             f"{ {e: self.modalities(e) for e in self.encoders} })")
        raise StoreError(f"store {self.root} has {modality!r} from several encoders {cands}: pass encoder=")

    def file(self, modality: str, encoder: str | None = None) -> ModalityFile:
        enc = self._encoder(encoder, modality)
        path = modality_file(self.root, enc, modality)
        if not path.is_file():
            raise StoreError(f"{path} is missing (store incomplete: re-run `clip4rec encode` to finish it)")
        return ModalityFile(path)

    def vectors(self, modality: str, encoder: str | None = None) -> tuple[list[str], np.ndarray, np.ndarray]:
        """(item ids, float32 [n,d], usable mask bool [n]) for one modality (``image``, ``text``, ``llm_text``,
        or ``image_shared`` / ``text_shared`` for lite, computed through the stored alignment heads)."""
        enc = self._encoder(encoder, modality)
        if modality in ("image_shared", "text_shared") and modality not in self.entry(enc).get("dims", {}):
            heads = AlignmentHeads.load(align_file(self.root, enc))
            side = modality.split("_")[0]
            feats = {m: self.vectors(m, enc) for m in heads.inputs[side]}
            ids = next(iter(feats.values()))[0]
            mask = np.logical_and.reduce([f[2] for f in feats.values()])
            out = heads.project(side, {m: f[1] for m, f in feats.items()})
            out[~mask] = 0.0
            return ids, out, mask
        f = self.file(modality, enc)
        return list(f.item_ids), f.read_vectors(), f.mask.copy()

    def shared(self, encoder: str | None = None) -> tuple[list[str], np.ndarray, np.ndarray, np.ndarray]:
        """(ids, image [n,d], text [n,d], both_usable [n]) in one image-text space, L2-normalised rows."""
        enc = encoder or next((e for e in self.encoders if self.manifest["encoders"][e].get("shared")
                               or self.manifest["encoders"][e].get("alignment")), None)
        if enc is None:
            raise StoreError(f"store {self.root} has no image-text pair in a shared space (encode with clip or lite)")
        entry = self.entry(enc)
        img_m, txt_m = entry.get("shared") or ("image_shared", "text_shared")
        ids, img, mi = self.vectors(img_m, enc)
        ids2, txt, mt = self.vectors(txt_m, enc)
        assert ids == ids2
        return ids, _l2(img), _l2(txt), mi & mt

    def bad_inputs(self, encoder: str | None = None) -> dict[str, dict[str, str]]:
        return self.entry(encoder).get("bad_inputs", {})

    def summary(self) -> dict[str, Any]:
        return {e: {k: v for k, v in self.manifest["encoders"][e].items() if k not in ("bad_inputs",)}
                for e in self.encoders}


def _l2(x: np.ndarray) -> np.ndarray:
    n = np.linalg.norm(x, axis=1, keepdims=True)
    return (x / np.where(n > 0, n, 1.0)).astype(np.float32)
