"""`python -m watcher` is the `factory-watcher` command."""

from watcher.commands.cli import main

raise SystemExit(main())
