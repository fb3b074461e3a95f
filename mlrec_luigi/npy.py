"""``.npy`` bytes: how the checkpoint files (embedding chunks, ratings parts, similar blocks) are written and read."""

from __future__ import annotations

import io

import numpy as np


def to_npy(array: np.ndarray) -> bytes:
    """``array`` as the bytes of one ``.npy`` file (no pickles)."""
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    return buffer.getvalue()


def from_npy(data: bytes, label: str, error: type[Exception]) -> np.ndarray:
    """The array of one ``.npy`` file; a truncated or unreadable one raises ``error`` naming ``label``."""
    try:
        return np.load(io.BytesIO(data), allow_pickle=False)
    except (ValueError, EOFError, OSError) as reason:
        raise error(f"{label} is not a readable .npy file ({reason})") from None
