"""The agent: the scheduled sync, its HTTP API, the status page and the Prometheus metrics."""
