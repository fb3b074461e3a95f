"""Exact nearest neighbours of every movie by the cosine similarity of their embeddings.

Plain numpy: a block of query rows against all vectors (one matrix product), then the best
``k`` of each row (:func:`select_top_k`: a bound from group maxima, then an exact selection among
the few groups that can hold a winner) and a sort of those ``k`` only. Vectors are
unit length, so the dot product is the cosine. Rows are in ``movies._id`` order, so
"ties broken by ``_id`` ascending" is "ties broken by row ascending". Memory is set by
the block: ``rows x movies`` float32 scores plus the partition's indices.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from mlrec_luigi.errors import Damaged
from mlrec_luigi.npy import from_npy, to_npy

SUB_BLOCK_ROWS = 256  # query rows per matrix product: bounds the scores matrix


class BlockDamaged(Damaged):
    """A block file cannot be read; the message names it."""


def block_dtype(k: int) -> np.dtype:
    """A block row: the row indices of a movie's ``k`` nearest neighbours and their scores."""
    return np.dtype([("neighbours", "<i4", (k,)), ("scores", "<f4", (k,))])


def top_k(vectors: np.ndarray, start: int, stop: int, k: int) -> tuple[np.ndarray, np.ndarray]:
    """For rows ``start..stop-1``: the ``k`` most similar other rows of ``vectors``, best first.

    Returns (row indices int32, scores float32), each ``(stop - start, k)``. Exact: every
    row is scored; ties (equal scores) go to the lower row index.
    """
    if k == 0:  # a dataset of one movie
        return np.empty((stop - start, 0), np.int32), np.empty((stop - start, 0), np.float32)
    scores = vectors[start:stop] @ vectors.T
    rows = np.arange(stop - start)
    scores[rows, start + rows] = -np.inf  # a movie is not its own neighbour
    return select_top_k(scores, k)


GROUP_COLUMNS = 64  # columns per group in the bound-then-select path of select_top_k


def select_top_k(scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Each row's ``k`` highest columns, best first, ties to the lower column; exact.

    Returns (columns int32, scores float32), each ``(rows, k)``. ``scores`` is not changed;
    columns scored ``-inf`` come last (callers mask with it).

    Wide rows are not partitioned whole: the columns are cut into groups of
    :data:`GROUP_COLUMNS`, and the k-th largest group maximum bounds the k-th best score from
    below (k groups hold a score at least that high). Where exactly k groups reach the bound,
    every one of the k best lies in them, and no other column can tie at the cut: the selection
    runs on those ``k x GROUP_COLUMNS`` columns only. Other rows (ties at the bound, too few
    finite scores) take the whole-row partition.
    """
    if k == 0:
        return np.empty((len(scores), 0), np.int32), np.empty((len(scores), 0), np.float32)
    if scores.shape[1] < 8 * GROUP_COLUMNS * k:
        return _select_in_rows(scores, k)
    columns = scores.shape[1]
    starts = np.arange(0, columns, GROUP_COLUMNS)
    maxima = np.maximum.reduceat(scores, starts, axis=1)
    top_groups = np.argpartition(-maxima, k - 1, axis=1)[:, :k]
    bound = np.take_along_axis(maxima, top_groups, axis=1).min(axis=1)
    simple = ((maxima >= bound[:, None]).sum(axis=1) == k) & np.isfinite(bound)
    neighbours = np.empty((len(scores), k), np.int64)
    rows = np.flatnonzero(simple)
    if len(rows):
        groups = np.sort(top_groups[rows], axis=1)  # columns in increasing order: ties by position = by column
        candidates = (starts[groups][:, :, None] + np.arange(GROUP_COLUMNS)).reshape(len(rows), -1)
        inside = candidates < columns
        candidates = np.minimum(candidates, columns - 1)
        values = scores[rows[:, None], candidates]
        values[~inside] = -np.inf  # past the last column (a shorter last group)
        picked, _ = _select_in_rows(values, k)
        neighbours[rows] = np.take_along_axis(candidates, picked.astype(np.int64), axis=1)
    rest = np.flatnonzero(~simple)
    if len(rest):
        neighbours[rest] = _select_in_rows(scores[rest], k)[0]
    result_scores = np.take_along_axis(scores, neighbours, axis=1)
    return neighbours.astype(np.int32), result_scores.astype(np.float32)


def _select_in_rows(scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """:func:`select_top_k` by partitioning every row whole (``argpartition`` at k)."""
    rows = np.arange(len(scores))
    if k >= scores.shape[1]:
        candidates = np.broadcast_to(np.arange(scores.shape[1]), scores.shape)
        order = np.lexsort((candidates, -scores), axis=1)
        neighbours = np.take_along_axis(candidates, order, axis=1)
        return neighbours.astype(np.int32), np.take_along_axis(scores, neighbours, axis=1).astype(np.float32)
    # Partitioned at k: the k best (in any order) in front, the (k+1)-th best at position k.
    partition = np.argpartition(-scores, k, axis=1)
    candidates = partition[:, :k]
    picked = np.take_along_axis(scores, candidates, axis=1)
    order = np.lexsort((candidates, -picked), axis=1)
    neighbours = np.take_along_axis(candidates, order, axis=1)
    # Where the (k+1)-th best equals the k-th, the cut fell between equal scores: resolve those rows by column.
    threshold = picked.min(axis=1)
    for row in np.flatnonzero(scores[rows, partition[:, k]] >= threshold):
        columns = np.flatnonzero(scores[row] >= threshold[row])
        neighbours[row] = columns[np.lexsort((columns, -scores[row, columns]))][:k]
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
    return to_npy(rows)


def unpack_block(data: bytes, label: str) -> np.ndarray:
    rows = from_npy(data, label, BlockDamaged)
    if rows.dtype.names != ("neighbours", "scores"):
        raise BlockDamaged(f"{label} is not a similar-movies block: fields {rows.dtype.names}")
    return rows


def neighbour_lists(rows: np.ndarray, ids: np.ndarray) -> list[list[str]]:
    """Each block row's neighbours as ``movies._id`` strings (``ids[i]``: the id of row i)."""
    return ids[rows["neighbours"]].tolist()
