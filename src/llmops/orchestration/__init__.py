"""Running the flows from the command line: Prefect's temporary API, started first."""
