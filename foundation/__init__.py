"""The bottom layer every WattsUp stage shares: settings, Kafka clients and topics, time.

Nothing here knows the wire format (:mod:`schemas`, one layer up) or the domain.
:mod:`foundation.timeutil` is plain time arithmetic, the only part the detection package uses.
"""
