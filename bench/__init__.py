"""dbsync's benchmark: speed and memory of export, verify, merge and merge-apply, next to baselines.

``python -m bench`` runs it (``--help`` for the options); ``docs/benchmark.md`` explains what
each figure is, and holds the results of a run. Every phase runs in a fresh subprocess so that
its peak memory is its own.
"""
