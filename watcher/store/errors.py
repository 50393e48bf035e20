"""The store's errors: a database that cannot be used, and one newer than this code."""

from __future__ import annotations


class StoreError(Exception):
    """The state database cannot be opened or is not ours."""


class SchemaTooNewError(StoreError):
    """The state database was written by a newer factory-watcher; it is left untouched."""

    def __init__(self, location: str, found: int, supported: int) -> None:
        super().__init__(
            f"state database {location} has schema version {found}, newer than this "
            f"factory-watcher understands ({supported}); it was left untouched: run the "
            "factory-watcher release that wrote it, or restore a backup taken before the upgrade"
        )
        self.location = location
        self.found = found
        self.supported = supported


class FencedError(StoreError):
    """A fenced write was refused: this replica's epoch no longer holds the lease.

    Nothing of the transaction was written; the replica must stop leading.
    """

    def __init__(self, epoch: int | None) -> None:
        held = "no epoch" if epoch is None else f"epoch {epoch}"
        super().__init__(f"write refused: this replica ({held}) no longer holds the leader lease")
        self.epoch = epoch
