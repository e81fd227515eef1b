"""What the tests and the benchmarks share to exercise the real thing: real brokers started at
free ports (brokers), a whole session on one of them, the service and simulated or real agents
started and stopped together (session), waiting for an event with a deadline and running a service
in a thread (waiting), and the fuzz targets (fuzz_targets). Nothing the service or a device runs
imports it."""
