from llmops.cli.main import main

main()
