"""Process-wide observability: the Prometheus metrics every process counts into, and the
JSON log lines every process writes."""
