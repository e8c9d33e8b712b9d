from muck.cli import main

main()
