"""Simulation: simulated devices and fleets, the benchmark harness, the one-command demo, the
embedded broker and sample files."""
