# The two commands of the README: `make demo` runs the main job on the embedded default,
# `make test` sets up and runs the whole test suite (what CI runs).
.PHONY: demo test lint bench bench-demo bench-hostile bench-service bench-device bench-codec docs

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

# The benchmarks, one target per family of benchmarks/manifest.py (which lists every script, its
# arguments and the results it writes); each ends by regenerating the docs' generated blocks.
# Archived results are not re-run. DATA is the data folder ($TINYMETAFED_DATA, or ../shared/data).
DATA = $${TINYMETAFED_DATA:-../shared/data}
PY = .venv/bin/python

# tune every algorithm on validation devices, then the comparison over seeds 0-2
bench:
	@bash scripts/setup.sh
	$(PY) benchmarks/tune.py --data-dir $(DATA)
	$(PY) benchmarks/seed_sweep.py --seeds 0,1,2 --data-dir $(DATA)
	$(PY) benchmarks/make_docs.py --write

# the demo's session settings, chosen on validation waves
bench-demo:
	@bash scripts/setup.sh
	$(PY) benchmarks/demo_settings.py
	$(PY) benchmarks/make_docs.py --write

# hostile devices (the service part starts mosquitto) and fuzzing (atheris)
bench-hostile:
	@bash scripts/setup.sh --test
	$(PY) benchmarks/hostile.py learning --use-case sine
	$(PY) benchmarks/hostile.py learning --use-case omniglot --rounds 200 --data-dir $(DATA)
	$(PY) benchmarks/hostile.py trust-sweep --use-case sine
	$(PY) benchmarks/hostile.py step-sweep --use-case sine
	$(PY) benchmarks/hostile.py agreement --use-case sine
	$(PY) benchmarks/hostile.py agreement --use-case omniglot --rounds 200 --data-dir $(DATA)
	$(PY) benchmarks/hostile.py norms --data-dir $(DATA)
	$(PY) benchmarks/hostile.py service --rounds 300
	$(PY) -m pip install --quiet atheris
	$(PY) benchmarks/fuzz.py
	$(PY) benchmarks/make_docs.py --write

# the service against real brokers (mosquitto, a NATS cluster): downlink, load, memory, cluster
bench-service:
	@bash scripts/setup.sh --test
	$(PY) benchmarks/downlink.py
	$(PY) benchmarks/aggregation.py
	$(PY) benchmarks/load.py
	$(PY) benchmarks/scale.py
	$(PY) benchmarks/cluster.py
	$(PY) benchmarks/make_docs.py --write

# the agent under MicroPython (also writes docs/device.md's energy table) and payload sizes
bench-device:
	@bash scripts/setup.sh
	$(PY) benchmarks/device_bench.py
	$(PY) benchmarks/payload_bound.py
	$(PY) benchmarks/make_docs.py --write

# the compressed downlink on validation devices
bench-codec:
	@bash scripts/setup.sh
	$(PY) benchmarks/downlink_codec.py --data-dir $(DATA)
	$(PY) benchmarks/make_docs.py --write

# regenerate the docs' generated blocks and learning curves from the committed results
docs:
	@bash scripts/setup.sh
	$(PY) benchmarks/make_docs.py --write
