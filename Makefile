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
	for u in sine omniglot kws occupancy; do \
	  .venv/bin/tinymetafed bench --use-case $$u --data-dir $${TINYMETAFED_DATA:-../shared/data} \
	    --quiet --json benchmarks/results/bench-$$u.json || exit 1; done
	.venv/bin/python benchmarks/make_docs.py

# TinyMetaFed's error-feedback ablation (not part of `bench`: about 560 s of CPU)
bench-ablation:
	@bash scripts/setup.sh
	.venv/bin/python benchmarks/ablation_ef.py --data-dir $${TINYMETAFED_DATA:-../shared/data}
