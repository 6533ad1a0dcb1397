"""dbsync: keep the MongoDB databases of several machines identical through git."""

__version__ = "0.1.0"
