from rnnlm.cli import main

main()
