"""The pure core: Extended JSON, the snapshot format and its order, the merge decision, the
conflict rule and the report. Functions over bytes and plain data; nothing here opens a file,
a database, git or the state store. A change to what a snapshot holds or how a merge decides
goes here, with tests over literal data.
"""
