"""The git integration: installing hooks and drivers, what the hooks do when git runs them,
the merge driver and the diff driver. Changes to how dbsync reacts to a git event go here.
"""
