from loradock.cli import main

main()
