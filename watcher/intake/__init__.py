"""One poll (or one timer tick) -> events -> rule decisions -> outbox rows, in one
transaction of the store."""
