"""Job specs, the run store, the stage runner and the `python -m jobs` command line."""
