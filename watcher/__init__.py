"""factory-watcher: polls Factory agent sessions and notifies Slack or webhooks."""

__version__ = "0.1.0"
USER_AGENT = f"factory-watcher/{__version__}"
