from flordb.cli.main import main

main()
