"""The renderers of the results pages: each turns loaded benchmark JSON into Markdown.

`registry.BLOCKS` names every block a docs page may hold (`<!-- generated: NAME -->`), with the
results files it reads; `pages` finds and fills those blocks; benchmarks/manifest.py says which
script makes which file. benchmarks/make_docs.py is the command that runs them.
"""
