"""The edges: every contact with the outside world. The stores (MongoDB through pymongo, the
embedded store), git, atomic files, the local state store, the run lock, backups and the
collection files on disk. A change to how dbsync talks to a database, git or the disk goes
here; nothing here decides a merge.
"""
