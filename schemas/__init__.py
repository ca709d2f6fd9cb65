"""Avro schemas and the one serialisation module every service uses."""
