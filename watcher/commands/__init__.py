"""The `factory-watcher` command line: the parser in `cli`, one module per command."""
