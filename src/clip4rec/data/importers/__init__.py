"""Importers turn raw files into a Dataset. Each is registered by the FORMAT name `clip4rec import` takes."""

from __future__ import annotations

from typing import Any, Callable

from clip4rec.data.dataset import Dataset

Importer = Callable[..., Dataset]
IMPORTERS: dict[str, Importer] = {}


def register(name: str) -> Callable[[Importer], Importer]:
    def wrap(fn: Importer) -> Importer:
        IMPORTERS[name] = fn
        return fn
    return wrap


def import_dataset(fmt: str, src: str, **options: Any) -> Dataset:
    _load_builtin()
    if fmt not in IMPORTERS:
        raise ValueError(f"unknown import format {fmt!r}; choose one of {sorted(IMPORTERS)}")
    return IMPORTERS[fmt](src, **options)


def _load_builtin() -> None:
    # Imported lazily so that `register` decorators run once, without import cycles.
    from clip4rec.data.importers import amazon_p5, generic, ml100k, recbole  # noqa: F401
