"""dbsync's benchmark: speed and memory of export, verify, merge and merge-apply, next to baselines.

``python -m bench`` runs it (``--help`` for the options); ``bench/README`` sections of the project
README explain what each figure is. Every phase runs in a fresh subprocess so that its peak
memory is its own.
"""
