"""Atomic writes for the benchmark's outputs: thin wrappers of the library's writer.

`embedcam.atomic` writes through a temporary file in the destination folder, fsyncs it and
renames it into place, and gives the result the permissions of any new file (``0o666 & ~umask``;
``tempfile.mkstemp`` alone would leave it ``0600``). ``atomic_outputs`` stages the files of one
run and moves them into place together (all or nothing, ``results.json`` last).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from embedcam.atomic import atomic_outputs
from embedcam.atomic import atomic_write_text as _library_write_text

__all__ = ["atomic_outputs", "atomic_write_json", "atomic_write_text"]


def atomic_write_text(path: Path, text: str) -> None:
    """Write UTF-8 ``text`` to ``path`` atomically (the folder is created when missing)."""
    _library_write_text(path, text)


def atomic_write_json(path: Path, obj: Any) -> None:
    """Write ``obj`` as indented JSON atomically (NaN and infinity are refused)."""
    atomic_write_text(path, json.dumps(obj, indent=1, allow_nan=False))
