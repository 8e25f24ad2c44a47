"""Importers turn raw files into a Dataset. Each is registered by the FORMAT name `clip4rec import` takes."""

from __future__ import annotations

from typing import Any, Callable

from clip4rec.data.dataset import Dataset

Importer = Callable[..., Dataset]
IMPORTERS: dict[str, Importer] = {}
# format -> {option: what it defaults to}, shown by `clip4rec import --help`
OPTION_DEFAULTS: dict[str, dict[str, str]] = {}


def register(name: str, options: dict[str, str] | None = None) -> Callable[[Importer], Importer]:
    def wrap(fn: Importer) -> Importer:
        IMPORTERS[name] = fn
        OPTION_DEFAULTS[name] = dict(options or {})
        return fn
    return wrap


def options_help() -> str:
    """Every format's -o options with their defaults, one format per paragraph."""
    _load_builtin()
    lines = []
    for fmt in sorted(IMPORTERS):
        options = OPTION_DEFAULTS.get(fmt) or {}
        body = "; ".join(f"{k}= (default: {v})" for k, v in options.items()) or "no options"
        lines.append(f"{fmt}: {body}")
    return "\n\n".join(lines)


def import_dataset(fmt: str, src: str, **options: Any) -> Dataset:
    _load_builtin()
    if fmt not in IMPORTERS:
        raise ValueError(f"unknown import format {fmt!r}; choose one of {sorted(IMPORTERS)}")
    return IMPORTERS[fmt](src, **options)


def _load_builtin() -> None:
    # Imported lazily so that `register` decorators run once, without import cycles.
    from clip4rec.data.importers import amazon_p5, generic, ml100k, recbole  # noqa: F401
