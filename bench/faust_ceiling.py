"""Faust's own ceiling: a bare agent that takes the readings topic in batches and does nothing with them.

Run by ``bench/stream_throughput.py`` in a process of its own, on the topic the worker has just
consumed, with the worker's batching settings and Kafka transport (or Faust's stock one), as a
consumer group of its own. It prints one line,
``messages <n> seconds <s>``: the span from the first batch to the one that reached ``--messages``.
The worker does everything this agent does (Faust fetches, builds and acknowledges each event)
and then its own work, so this is the rate the worker could reach if its own work cost nothing.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

import faust


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--topic", required=True)
    parser.add_argument("--partitions", type=int, required=True)
    parser.add_argument("--messages", type=int, required=True)
    parser.add_argument("--take", type=int, default=2000)
    parser.add_argument("--within", type=float, default=0.2)
    parser.add_argument("--transport", choices=["kafka", "wattsup"], default="wattsup",
                        help="Faust's stock Kafka transport, or the worker's (stream_processors/faust_transport.py).")
    args = parser.parse_args()

    app = faust.App(f"faust-ceiling-{os.getpid()}", broker=f"{args.transport}://{args.bootstrap}", store="memory://",
                    value_serializer="raw", key_serializer="raw", topic_partitions=args.partitions,
                    broker_max_poll_records=args.take * 4, web_enabled=False, datadir=tempfile.mkdtemp())
    topic = app.topic(args.topic, key_type=bytes, value_type=bytes, partitions=args.partitions, internal=False)
    seen = {"n": 0, "t0": 0.0}

    @app.agent(topic)
    async def take(stream: faust.StreamT) -> None:
        async for events in stream.take_events(args.take, within=args.within):
            if not seen["n"]:
                seen["t0"] = time.perf_counter()
            seen["n"] += len(events)
            if seen["n"] >= args.messages:
                out = sys.__stdout__  # Faust's worker may have redirected sys.stdout to its log
                assert out is not None
                out.write(f"messages {seen['n']} seconds {time.perf_counter() - seen['t0']:.3f}\n")
                out.flush()
                os._exit(0)  # the bench wants the figure, not a graceful shutdown of a throwaway group

    from faust.worker import Worker

    sys.argv = sys.argv[:1] + ["worker"]
    Worker(app, loglevel="error", quiet=True, redirect_stdouts=False).execute_from_commandline()


if __name__ == "__main__":
    main()
