"""Operator feedback on Kafka: marks to the compacted feedback topic, and followers that read it all.

What a mark means for detection is :mod:`detection.feedback`; this package only moves marks between
the CLI, the dashboard API and the stream workers (``wattsup.feedback``, Avro ``FeedbackMark``).
"""
