"""The SQL stores' one body of SQL: every statement of the state, the journal, forgetting and
retention, written once (:class:`~rulekit.store.sql.state.SQLState`,
:mod:`rulekit.store.sql.erasure`) for SQLite and PostgreSQL alike.

What differs between the two databases is a :class:`~rulekit.store.sql.dialect.Dialect`: how
a parameter is written, how times and JSON are stored, a few fragments (a JSON field, "one of
this list", row locks) and which errors mean "cannot persist right now". PostgreSQL overrides
only what several daemons on one database need (:mod:`rulekit.store.sql.postgres`: claims with
``FOR UPDATE SKIP LOCKED``, one-statement writes; :mod:`rulekit.store.sql.pacing`: shared
pacing); its dialect is :mod:`rulekit.store.sql.postgres_dialect`. Connections, transactions and
migrations stay with each store (:mod:`rulekit.store.sqlite`, :mod:`rulekit.store.postgres`).
"""
