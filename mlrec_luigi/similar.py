"""Exact nearest neighbours of every movie by the cosine similarity of their embeddings.

Plain numpy: a block of query rows against all vectors (one matrix product), then
``argpartition`` for the best ``k`` of each row and a sort of those ``k`` only. Vectors are
unit length, so the dot product is the cosine. Rows are in ``movies._id`` order, so
"ties broken by ``_id`` ascending" is "ties broken by row ascending". Memory is set by
the block: ``rows x movies`` float32 scores plus the partition's indices.
"""

from __future__ import annotations

import io
from collections.abc import Callable

import numpy as np

SUB_BLOCK_ROWS = 256  # query rows per matrix product: bounds the scores matrix


class BlockDamaged(ValueError):
    """A block file cannot be read; the message names it."""


def block_dtype(k: int) -> np.dtype:
    """A block row: the row indices of a movie's ``k`` nearest neighbours and their scores."""
    return np.dtype([("neighbours", "<i4", (k,)), ("scores", "<f4", (k,))])


def top_k(vectors: np.ndarray, start: int, stop: int, k: int) -> tuple[np.ndarray, np.ndarray]:
    """For rows ``start..stop-1``: the ``k`` most similar other rows of ``vectors``, best first.

    Returns (row indices int32, scores float32), each ``(stop - start, k)``. Exact: every
    row is scored; ties (equal scores) go to the lower row index.
    """
    queries = vectors[start:stop]
    scores = queries @ vectors.T
    own = np.arange(len(queries))
    scores[own, start + own] = -np.inf  # a movie is not its own neighbour
    candidates = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    picked = np.take_along_axis(scores, candidates, axis=1)
    threshold = picked.min(axis=1)
    # argpartition may cut between equal scores at the k-th place: resolve those rows exactly.
    tied = (scores >= threshold[:, None]).sum(axis=1) > k
    order = np.lexsort((candidates, -picked), axis=1)
    neighbours = np.take_along_axis(candidates, order, axis=1)
    for row in np.flatnonzero(tied):
        columns = np.flatnonzero(scores[row] >= threshold[row])
        best = columns[np.lexsort((columns, -scores[row, columns]))][:k]
        neighbours[row] = best
    result_scores = np.take_along_axis(scores, neighbours, axis=1)
    return neighbours.astype(np.int32), result_scores.astype(np.float32)


def compute_block(
    vectors: np.ndarray, start: int, stop: int, k: int, on_progress: Callable[[int], None] | None = None
) -> np.ndarray:
    """The neighbours of rows ``start..stop-1`` as :func:`block_dtype` rows, in sub-blocks."""
    rows = np.empty(stop - start, dtype=block_dtype(k))
    for sub in range(start, stop, SUB_BLOCK_ROWS):
        end = min(sub + SUB_BLOCK_ROWS, stop)
        neighbours, scores = top_k(vectors, sub, end, k)
        rows["neighbours"][sub - start : end - start] = neighbours
        rows["scores"][sub - start : end - start] = scores
        if on_progress:
            on_progress(end - start)
    return rows


def pack_block(rows: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, rows, allow_pickle=False)
    return buffer.getvalue()


def unpack_block(data: bytes, label: str) -> np.ndarray:
    try:
        rows = np.load(io.BytesIO(data), allow_pickle=False)
    except (ValueError, EOFError, OSError) as error:
        raise BlockDamaged(f"{label} is not a readable .npy file ({error})") from None
    if rows.dtype.names != ("neighbours", "scores"):
        raise BlockDamaged(f"{label} is not a similar-movies block: fields {rows.dtype.names}")
    return rows


def neighbour_lists(rows: np.ndarray, ids: np.ndarray) -> list[list[str]]:
    """Each block row's neighbours as ``movies._id`` strings (``ids[i]``: the id of row i)."""
    return ids[rows["neighbours"]].tolist()
