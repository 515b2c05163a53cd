from halo.cli import main

main()
