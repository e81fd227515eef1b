"""The benchmarks: each module is run from the repository's root as `python -m benchmarks.NAME`
and writes its JSON into benchmarks/results/; manifest.py says which module with which arguments
makes which file, and make_docs.py (with docgen/) fills the docs' generated blocks from them."""
