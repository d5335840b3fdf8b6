from netctl.cli import main

main()
