from userstore.worker.cli import main

main()
