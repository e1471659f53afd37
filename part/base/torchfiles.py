"""Torch files (checkpoints, weights, prepared datasets): written atomically, read without running code.

``torch.load`` with ``weights_only=True``, so a file can hold tensors and plain containers only; a damaged
or foreign file is an error naming it and what to do, never a traceback from deep inside the unpickler.
"""

from __future__ import annotations

import os
import pickle
from pathlib import Path
from typing import Any

import torch

from part.base.files import atomic_write


def save_torch(path: str | os.PathLike, obj: Any) -> Path:
    """``torch.save`` of ``obj``, atomically; equal objects give equal bytes, so a file's SHA-256 (which
    evaluation results record) changes only with its tensors."""
    return atomic_write(path, lambda tmp: _save(obj, tmp))


def _save(obj: Any, tmp: Path) -> None:
    """Through a file object: given a path, torch names the archive's root folder after the file (here a
    random temporary); given a file object, always ``archive``. Its ``.data/serialization_id`` is derived
    from the records' checksums and sizes, not drawn at random, so nothing else varies between saves."""
    with open(tmp, "wb") as f:
        torch.save(obj, f)


def load_torch(path: str | os.PathLike, map_location: Any = "cpu") -> Any:
    """``torch.load`` restricted to tensors and plain containers, with an error that names the file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        if "Unsupported global" in str(err):  # torch's refusal of a GLOBAL outside the allow-list
            raise ValueError(f"{path}: refused — the file holds Python objects beyond tensors and plain "
                             "containers (code that loading would run); this pipeline never writes such files. "
                             "Delete it and regenerate it, or load it yourself only if you trust its source") from None
        raise ValueError(f"{path}: cannot be read as a torch file ({_reason(err)}); it is corrupted or truncated: "
                         "delete it and regenerate it") from None
    except Exception as err:  # torch raises RuntimeError/EOFError for damaged files
        raise ValueError(f"{path}: cannot be read as a torch file ({type(err).__name__}: {err}); "
                         "it is corrupted or truncated: delete it and regenerate it") from err


def _reason(err: pickle.UnpicklingError) -> str:
    """The unpickler's own complaint (e.g. ``Unsupported operand 193`` for bytes that are no pickle), without
    torch's advice to load the file with ``weights_only=False``, which is no advice for a damaged file."""
    text = str(err)
    marker = "WeightsUnpickler error:"
    if marker not in text:
        return text
    return text.split(marker, 1)[1].strip().split("\n", 1)[0].strip()
