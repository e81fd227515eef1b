"""Observability: event logs, InfluxDB line protocol and sinks, the metric recorder, the HTML
report."""
