"""A real schema registry (Apicurio Registry, Confluent-compatible API) fetched with Maven, run without Docker."""
