from dbsync.cli import main

main()
