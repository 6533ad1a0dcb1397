"""What dbsync's git hooks and the runs that start git tell each other, through the environment.

Kept apart (nothing imported) so that a hook with nothing to do starts quickly.
"""

IN_HOOK = "DBSYNC_HOOK"
"""Set while a hook runs, and on the git commands a run starts whose hooks must not run dbsync
again (the hook scripts then skip dbsync: no recursion)."""
SYNC_EXPORTED = "DBSYNC_SYNC_EXPORTED"
"""Set by ``dbsync sync`` on the pushes it makes: the snapshot was exported and committed."""
