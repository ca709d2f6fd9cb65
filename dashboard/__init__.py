"""The WattsUp dashboard service: stores the stream's output, serves the REST API, live events and alerts."""
