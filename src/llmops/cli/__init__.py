"""The `llmops` command line: parsing and printing over the engine (`llmops.stages`)."""
