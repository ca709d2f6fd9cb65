"""Meter state to bytes and back: how a group of meters' state is persisted (e.g. a changelog).

A blob is a JSON header (the caller's fields, the format version and each array's dtype and
shape) followed by the arrays' raw bytes. It runs for every touched feeder of every stream
micro-batch, so raw buffers rather than ``np.savez`` (a zip archive, several times slower) and
nothing that needs pickle to read back.

:data:`STATE_FORMAT` is bumped whenever the meaning or layout of the state changes; a blob of
another format is refused with :class:`StateFormatError` rather than misread.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np

STATE_FORMAT = 2
"""Version of the meter state layout (:mod:`detection.meter_state`) these blobs carry: 2 added the
register, repeat, zero-regime and level-shift columns and the hour-of-day share of zeros."""
_FORMAT_KEY = "_format"
_LAYOUT_KEY = "_arrays"


class StateFormatError(ValueError):
    """A blob written by another state format than this code reads."""


def encode_state(header: dict[str, Any], arrays: dict[str, np.ndarray]) -> bytes:
    """``header`` (JSON-serialisable) and ``arrays`` as one blob."""
    layout = [[name, a.dtype.str, list(a.shape)] for name, a in arrays.items()]
    head = json.dumps({**header, _FORMAT_KEY: STATE_FORMAT, _LAYOUT_KEY: layout}).encode()
    return b"".join([len(head).to_bytes(4, "big"), head, *(np.ascontiguousarray(a).tobytes() for a in arrays.values())])


def decode_state(blob: bytes) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """(header, arrays) of a blob from :func:`encode_state`; arrays are writable copies."""
    n = int.from_bytes(blob[:4], "big")
    header = json.loads(blob[4:4 + n])
    found = header.pop(_FORMAT_KEY, 1)  # blobs written before the codec was versioned are format 1
    if found != STATE_FORMAT:
        raise StateFormatError(f"meter state of format {found}; this WattsUp reads format {STATE_FORMAT}")
    arrays, offset = {}, 4 + n
    for name, dtype, shape in header.pop(_LAYOUT_KEY):
        dt = np.dtype(dtype)
        count = int(np.prod(shape)) if shape else 1
        arrays[name] = np.frombuffer(blob, dtype=dt, count=count, offset=offset).reshape(shape).copy()
        offset += count * dt.itemsize
    return header, arrays
