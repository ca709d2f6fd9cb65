"""The meter state codec: arrays and header round-trip, other formats are refused."""

from __future__ import annotations

import json

import numpy as np
import pytest

from detection.state_codec import STATE_FORMAT, StateFormatError, decode_state, encode_state


def test_round_trip_keeps_dtypes_shapes_and_values():
    arrays = {"last_ts": np.array([1, 2], dtype=np.int64), "how": np.arange(12, dtype=np.float32).reshape(2, 2, 3)}
    header, back = decode_state(encode_state({"meters": ["a", "b"], "persisted_at": 5}, arrays))
    assert header == {"meters": ["a", "b"], "persisted_at": 5}
    for name, values in arrays.items():
        assert back[name].dtype == values.dtype
        np.testing.assert_array_equal(back[name], values)
    back["how"][0, 0, 0] = 99.0  # writable copies, not views of the blob


def test_a_blob_of_another_format_is_refused():
    blob = encode_state({}, {"v": np.zeros(1)})
    n = int.from_bytes(blob[:4], "big")
    header = json.loads(blob[4:4 + n])
    header["_format"] = STATE_FORMAT + 1
    head = json.dumps(header).encode()
    newer = len(head).to_bytes(4, "big") + head + blob[4 + n:]
    with pytest.raises(StateFormatError, match=f"format {STATE_FORMAT + 1}"):
        decode_state(newer)
