from convdoctor.cli import main

main()
