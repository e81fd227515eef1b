"""The aggregation service over MQTT: rounds, their ledger, journal, checkpoint, presence,
the broker client and the service's configuration."""
