"""YAML file -> validated, frozen `Settings` (`loader`); every problem names file, line
and key path.

The package itself imports nothing: `statepath` and `yamlsafe` serve the light
commands (`outbox list`, `status`) without loading pydantic through `loader`.
"""
