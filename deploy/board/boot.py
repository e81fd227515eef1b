# Runs before main.py on every reset: collect garbage early so the agent starts with a clean heap.
import gc

gc.collect()
