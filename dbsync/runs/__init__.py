"""The runs: one service per command (export, merge, import, restore, status...) and the one
pipeline every changing run goes through (lock, pending retries, history, prune). A new
command or a rule that must hold for every run goes here; the CLI only calls these.
"""
