"""Backend-neutral table mixins: the queries and decoding both stores share.

Each module holds one concern's methods (sessions, events and their write
path, rules, outbox, cards, admin, retention, report runs; `status` the
read-only stores' shared reads), written against `TableBase`:
`_transaction()` yields something with `execute` and `executemany`,
`_reading()` a connection to read several statements on, and
`_read_all`/`_read_one` run one read. SQL uses `?` placeholders (the
PostgreSQL store's cursors translate them); what truly differs between the
dialects is a named class attribute each backend's mixin sets, or a method it
overrides.
"""
