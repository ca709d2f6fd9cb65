"""Cutting what one ``take_events`` call hands the agent into micro-batches of bounded size.

The agent takes up to ``max_batch_messages`` messages at a time, because Faust's and the
engine's costs per batch are paid once however many readings it holds: single-reading messages
want thousands per batch. Head-end messages carry up to hundreds of readings each, so the same
count of those would be hundreds of thousands of readings in one feature matrix. The take is
therefore scored in chunks of at most ``max_bytes`` of message payload, a measure of readings
known before decoding. A chunk never splits a message, so a feeder's interval, which a head-end
sends in one message, is always scored with its peers.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import TypeVar

M = TypeVar("M", bound=tuple)


def chunks_by_bytes(messages: Sequence[M], max_bytes: int) -> Iterator[Sequence[M]]:
    """Consecutive runs of ``messages`` (each a tuple whose first item is the payload) of at most
    ``max_bytes`` of payload, or a single message where one alone is larger."""
    start, size = 0, 0
    for i, message in enumerate(messages):
        length = len(message[0] or b"")
        if size and size + length > max_bytes:
            yield messages[start:i]
            start, size = i, 0
        size += length
    if start < len(messages):
        yield messages[start:]
