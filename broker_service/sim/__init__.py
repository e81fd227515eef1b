"""Simulation: simulated clients (what a device does with its samples) and fleets, the benchmark
harness, the one-command demo, the embedded broker and sample files."""
