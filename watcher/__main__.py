"""`python -m watcher` is the `factory-watcher` command."""

from watcher.cli import main

raise SystemExit(main())
