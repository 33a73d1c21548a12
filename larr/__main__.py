from larr.cli import main

main()
