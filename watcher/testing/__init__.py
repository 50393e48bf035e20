"""What only simulates: the Factory API simulator, fake Slack and webhook sinks, fake-HTTP helpers.

Shipped because `factory-watcher demo` runs the real daemon against them; no product
module imports this package except the demo command, and only when `demo` runs.
"""
