"""Meter readings in and out: CSV files, the one Kafka producer, reading history back, decoded columns.

Every service that writes or reads readings goes through here, so validation (what a valid
reading is, and the reason a bad one is rejected) is the same everywhere.
"""
