# The two commands of the README: `make demo` runs the main job on the embedded default,
# `make test` sets up and runs the whole test suite (what CI runs).
.PHONY: demo test lint bench bench-ablation

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

bench:
	@bash scripts/setup.sh
	.venv/bin/python benchmarks/seed_sweep.py --seeds 0,1,2 \
	  --data-dir $${TINYMETAFED_DATA:-../shared/data}
	.venv/bin/python benchmarks/make_docs.py --write

bench-ablation:
	@bash scripts/setup.sh
	.venv/bin/python benchmarks/ablation_ef.py --data-dir $${TINYMETAFED_DATA:-../shared/data}
