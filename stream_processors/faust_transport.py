"""Faust's Kafka transport with a cheaper delivery loop: one flow-control wait per fetch, not per message.

Faust's consumer hands each fetched message to the streams inside ``wait_first(callback(message),
suspend_flow.wait())``: four asyncio tasks and an ``asyncio.wait`` per message, so that a
rebalance (which sets ``suspend_flow``) can interrupt a delivery blocked on a full stream buffer.
For single-reading messages that is most of what the worker pays per reading before its own
work starts. :class:`BatchDeliveryConsumer` fetches as Faust does, then keeps the same checks per
message (read offsets, gaps, ``commit_every``) but delivers the whole fetch inside one
``wait_first``: a rebalance still interrupts it at once, and the fetched messages not yet
delivered are dropped, as Faust's own loop drops them when the flow stops (the partitions are
sought to their committed offsets after the rebalance, and :mod:`stream_processors.offset_gaps`
catches an offset skipped on the way).

The transport is registered under the URL scheme ``wattsup`` through the ``faust.transports``
entry point (Faust's plug-in mechanism for transports), so ``broker="wattsup://host:9092"``
selects it; everything else (aiokafka, its producer, TLS and SASL) is Faust's own.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any, ClassVar

from faust.transport.consumer import CONSUMER_FETCHING
from faust.transport.drivers import aiokafka as faust_aiokafka

SCHEME = "wattsup"
"""The broker URL scheme of :class:`Transport` (pyproject.toml's ``faust.transports`` entry point)."""

YIELD_EVERY = 100
"""Messages delivered between two yields to the event loop, as in Faust's own loop: a large fetch
must not keep timers and the web server waiting."""


class BatchDeliveryConsumer(faust_aiokafka.Consumer):
    """Faust's aiokafka consumer, delivering each fetch under one flow-control wait."""

    async def _drain_messages(self, fetcher: Any) -> None:  # pragma: no cover - runs in the worker
        consumer_stopped = self._stopped.is_set
        fetcher_stopped = fetcher._stopped.is_set
        try:
            while not (consumer_stopped() or fetcher_stopped()):
                self.diag.set_flag(CONSUMER_FETCHING)
                fetched = self.getmany(timeout=1.0)
                await self.sleep(0)  # getmany may return at once, loop after loop
                if not self.should_stop:
                    try:
                        # The fetch itself (which waits while the flow is stopped) runs outside the
                        # flow-control wait: a fetch cancelled half-way would lose records the
                        # fetcher has already moved past, changelog records in a recovery included.
                        first = await fetched.__anext__()
                    except StopAsyncIteration:
                        pass
                    else:
                        await self.wait_first(self._deliver(first, fetched), self.suspend_flow.wait())
                    finally:
                        await fetched.aclose()
                self.diag.unset_flag(CONSUMER_FETCHING)
        except self.consumer_stopped_errors:
            if self.transport.app.should_stop:
                self.log.info("Broker stopped consumer, shutting down...")
                return
            raise
        except asyncio.CancelledError:
            if self.transport.app.should_stop:
                self.log.info("Consumer shutting down for user cancel.")
                return
            raise
        except Exception:
            self.log.exception("Drain messages raised")
            raise
        finally:
            self.diag.unset_flag(CONSUMER_FETCHING)

    async def _deliver(self, first: tuple[Any, Any], rest: AsyncIterator[tuple[Any, Any]]) -> None:
        """Hand one fetch's messages to the streams, with Faust's per-message offset bookkeeping.

        Past the first message, ``getmany`` only walks records already fetched and stops when the
        flow stops, so a cancellation here never interrupts a fetch."""
        await self._deliver_one(*first)
        since_yield = 1
        async for tp, message in rest:
            since_yield += 1
            if since_yield > YIELD_EVERY:
                await asyncio.sleep(0)
                since_yield = 0
            await self._deliver_one(tp, message)

    async def _deliver_one(self, tp: Any, message: Any) -> None:
        offset = message.offset
        read = self._read_offset[tp]
        if read is not None and offset < read:
            return  # seen before a seek back; Faust drops these too
        if read and offset - read > 1 and self.app.topics.acks_enabled_for(message.topic):
            await self._add_gap(tp, read + 1, offset)
        if self._commit_every is not None and self._n_acked >= self._commit_every:
            self._n_acked = 0
            await self.commit()
        await self.callback(message)
        self._read_offset[tp] = offset


class Transport(faust_aiokafka.Transport):
    """Faust's aiokafka transport with :class:`BatchDeliveryConsumer`."""

    Consumer: ClassVar[type[Any]] = BatchDeliveryConsumer
