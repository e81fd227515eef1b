# The two commands of the README: `make demo` runs the main job on the embedded default,
# `make test` sets up and runs the whole test suite (what CI runs).
.PHONY: demo test lint bench bench-demo bench-hostile bench-service bench-device bench-codec docs reprice

demo:
	@bash scripts/setup.sh
	.venv/bin/tinymetafed demo

test:
	@bash scripts/setup.sh --test
	.venv/bin/ruff check .
	.venv/bin/ruff format --check .
	.venv/bin/python -m pytest -q

lint:
	.venv/bin/ruff check .
	.venv/bin/ruff format --check .

# The benchmarks, one target per family of benchmarks/manifest.py (which lists every module, its
# arguments and the results it writes); each ends by regenerating the docs' generated blocks.
# Archived results are not re-run. DATA is the data folder ($TINYMETAFED_DATA, or ../shared/data).
DATA = $${TINYMETAFED_DATA:-../shared/data}
PY = .venv/bin/python

# tune every algorithm on validation devices, then the comparison over seeds 0-2
bench:
	@bash scripts/setup.sh
	$(PY) -m benchmarks.tune --data-dir $(DATA)
	$(PY) -m benchmarks.seed_sweep --seeds 0,1,2 --data-dir $(DATA)
	$(PY) -m benchmarks.async_fleet --data-dir $(DATA)
	$(PY) -m benchmarks.make_docs --write

# the demo's session settings, chosen on validation waves
bench-demo:
	@bash scripts/setup.sh
	$(PY) -m benchmarks.demo_settings
	$(PY) -m benchmarks.make_docs --write

# hostile devices (the service part starts mosquitto) and fuzzing (atheris)
bench-hostile:
	@bash scripts/setup.sh --test
	$(PY) -m benchmarks.hostile learning --use-case sine
	$(PY) -m benchmarks.hostile learning --use-case omniglot --rounds 200 --data-dir $(DATA)
	$(PY) -m benchmarks.hostile trust-sweep --use-case sine
	$(PY) -m benchmarks.hostile step-sweep --use-case sine
	$(PY) -m benchmarks.hostile agreement --use-case sine
	$(PY) -m benchmarks.hostile agreement --use-case omniglot --rounds 200 --data-dir $(DATA)
	$(PY) -m benchmarks.hostile norms --data-dir $(DATA)
	$(PY) -m benchmarks.hostile service --rounds 300
	$(PY) -m pip install --quiet atheris
	$(PY) -m benchmarks.fuzz
	$(PY) -m benchmarks.make_docs --write

# the service against real brokers (mosquitto, a NATS cluster): downlink, load, memory, cluster,
# devices that sleep against invited rounds (about 15 minutes)
bench-service:
	@bash scripts/setup.sh --test
	$(PY) -m benchmarks.downlink
	$(PY) -m benchmarks.aggregation
	$(PY) -m benchmarks.load
	$(PY) -m benchmarks.scale
	$(PY) -m benchmarks.cluster
	$(PY) -m benchmarks.sleepy_fleet --data-dir $(DATA)
	$(PY) -m benchmarks.make_docs --write

# the agent under the unix-port MicroPython and on Cortex-M firmware under QEMU (its instruction
# counts and the energy model's figures: about 20 minutes), payload sizes and battery life
bench-device:
	@bash scripts/setup.sh
	$(PY) -m benchmarks.device_bench
	$(PY) -m benchmarks.device_bench --cortexm
	$(PY) -m benchmarks.payload_bound
	$(PY) -m benchmarks.battery
	$(PY) -m benchmarks.make_docs --write

# the compressed downlink on validation devices
bench-codec:
	@bash scripts/setup.sh
	$(PY) -m benchmarks.downlink_codec --data-dir $(DATA)
	$(PY) -m benchmarks.make_docs --write

# re-price the learning benchmarks' energy figures with device_agent/energy.py as it is (after a
# recalibration of its compute model: seconds, no benchmark re-run), then the docs
reprice:
	$(PY) -m benchmarks.reprice
	$(PY) -m benchmarks.make_docs --write

# regenerate the docs' generated blocks and learning curves from the committed results
docs:
	@bash scripts/setup.sh
	$(PY) -m benchmarks.make_docs --write
