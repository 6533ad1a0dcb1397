from dbsync.launch import main

main()
