"""Process-wide operations: the Prometheus metrics and JSON log lines every process writes,
and the checks of its environment a process makes at start-up."""
