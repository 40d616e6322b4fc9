from userstore.worker.entry import main

main()
