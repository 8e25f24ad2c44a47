"""Item text: compose it from item columns, clean it, hash it.

Bad text is not an error: empty / missing text gives ``None`` (the item gets a mask bit), bytes that are not
UTF-8 are decoded leniently, HTML entities and tags are unescaped/stripped, whitespace is collapsed.
"""

from __future__ import annotations

import hashlib
import html
import math
import re
import unicodedata
from typing import Any, Iterable, Mapping

_TAG = re.compile(r"<[^>]{0,200}>")
_WS = re.compile(r"\s+")
DEFAULT_TEXT_FIELDS = ("title", "text")


def _to_str(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, (bytes, bytearray)):
        raw = bytes(value)
        try:
            value = raw.decode("utf-8")
        except UnicodeDecodeError:
            try:
                value = raw.decode("cp1252")
            except UnicodeDecodeError:
                value = raw.decode("latin-1")
    if isinstance(value, (list, tuple)):
        parts = [p for p in (_to_str(v) for v in value) if p]
        return ", ".join(parts) if parts else None
    if hasattr(value, "tolist") and not isinstance(value, str):  # numpy arrays of genres etc.
        return _to_str(value.tolist())
    return str(value)


def clean_text(value: Any) -> str | None:
    """Unicode-normalised, entity-unescaped, tag-stripped, whitespace-collapsed text; None when empty."""
    text = _to_str(value)
    if text is None:
        return None
    # Lone surrogates (from bad decoding upstream) cannot be encoded: replace them.
    text = text.encode("utf-8", errors="replace").decode("utf-8")
    for _ in range(2):  # double-escaped entities such as &amp;quot;
        text = html.unescape(text)
    text = _TAG.sub(" ", text)
    text = unicodedata.normalize("NFC", text).replace("\ufffd", " ")
    text = "".join(ch if (ch.isprintable() or ch.isspace()) else " " for ch in text)
    text = _WS.sub(" ", text).strip()
    return text or None


def compose_text(row: Mapping[str, Any], fields: Iterable[str] = DEFAULT_TEXT_FIELDS) -> str | None:
    """Join the cleaned, non-empty values of ``fields`` (in order) into one text; None if all are empty.

    ``title`` and ``text`` are joined as they are; other columns are written as ``Field: value`` so that a
    text model sees what they are (e.g. ``Genres: Action, Comedy``). ``|``-separated values become lists.
    """
    parts: list[str] = []
    for name in fields:
        value = row.get(name)
        if isinstance(value, str) and "|" in value and name not in ("title", "text"):
            value = [v for v in value.split("|") if v]
        cleaned = clean_text(value)
        if not cleaned:
            continue
        if name in ("title", "text"):
            parts.append(cleaned)
        else:
            parts.append(f"{name.replace('_', ' ').capitalize()}: {cleaned}")
    if not parts:
        return None
    # a field already contained in another (e.g. a title the importer already put into ``text``) is dropped
    low = [p.lower() for p in parts]
    parts = [p for i, p in enumerate(parts)
             if not any(i != j and len(low[j]) > len(low[i]) and low[i] in low[j] for j in range(len(parts)))]
    return ". ".join(p.rstrip(". ") if i < len(parts) - 1 else p for i, p in enumerate(parts))


def text_hash(text: str | None) -> bytes:
    return hashlib.sha256(b"text\0" + (text or "").encode("utf-8")).digest()
