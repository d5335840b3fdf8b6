from netctl.entry import main

main()
