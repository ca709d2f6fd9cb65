"""Detection: from a batch of meter readings to explained anomalies. Knows nothing of Kafka.

A batch flows through:

* :mod:`detection.calendar` places each reading in its hour-of-week and hour-of-day slots;
* :mod:`detection.meter_state` keeps every meter's state in flat arrays,
  :mod:`detection.state_codec` turns a group of meters' state into bytes and back;
* :mod:`detection.features` turns readings and state into the detector's features, in rounds,
  with :mod:`detection.baseline` (usual usage per slot) and :mod:`detection.peers` (what a
  whole feeder shares is nobody's anomaly);
* :mod:`detection.isolation_forest` scores the features, :mod:`detection.rules` covers what has
  a plain definition (outages, stuck registers) and meters too young for the model;
* :mod:`detection.thresholds` turns scores into flags and severities, per meter;
* :mod:`detection.explain` says why, in words;
* :mod:`detection.engine` runs those steps for one batch.

:mod:`detection.replay` replays a readings frame through them in time order, as the stream
would; :mod:`detection.training` fits the detector on such a replay, :mod:`detection.offline`
scores a frame (``wattsup detect``), :mod:`detection.evaluation` measures quality on labels.
"""
