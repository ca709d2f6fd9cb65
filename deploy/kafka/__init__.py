"""A real single-node Apache Kafka (KRaft) fetched with Maven and run without Docker."""
