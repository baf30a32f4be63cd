"""Copy a digest SQLite database into an empty PostgreSQL one: the one-off move when scaling out.

Stop every digest process that writes to the SQLite file first (daemon, senders, web app), then:

    .venv/bin/python scripts/copy_sqlite_to_postgres.py sqlite:///var/digest.sqlite3 \\
        postgresql://digest@db.internal/digest

Both databases are migrated to the current schema first; the copy is one transaction on the target
(all or nothing) and refuses a target that already holds data. The daemon's job table is not copied:
the daemon schedules its jobs again on start.
"""

from __future__ import annotations

import argparse
import sys

from sqlalchemy import Connection, Integer, func, insert, select, text
from sqlalchemy.exc import SQLAlchemyError

from digest.errors import DigestError, StoreError
from digest.store import Store
from digest.store import schema as t

__all__ = ["copy_database"]


def copy_database(source_url: str, target_url: str, batch_size: int = 1000) -> dict[str, int]:
    """Copy every table of digest's schema from ``source_url`` to ``target_url``; rows copied per table.

    Raises StoreError if the target already holds rows (nothing is written then).
    """
    source, target = Store(source_url), Store(target_url)
    try:
        if target.dialect != "postgresql":
            raise StoreError(f"the target must be a PostgreSQL database, not {target.dialect}")
        copied: dict[str, int] = {}
        with source.engine.connect() as src, target.engine.begin() as dst:
            busy = [table.name for table in t.metadata.sorted_tables
                    if dst.execute(select(func.count()).select_from(table)).scalar_one()]
            if busy:
                raise StoreError(f"the target database is not empty (rows in {', '.join(busy)}); "
                                 "copy into a new database")
            # Parents before children, so every foreign key finds its row.
            for table in t.metadata.sorted_tables:
                copied[table.name] = 0
                result = src.execution_options(yield_per=batch_size).execute(select(table))
                for rows in result.mappings().partitions():
                    dst.execute(insert(table), [dict(r) for r in rows])
                    copied[table.name] += len(rows)
            _reset_sequences(dst)
        return copied
    finally:
        source.close()
        target.close()


def _reset_sequences(conn: Connection) -> None:
    """Ids were copied as they were: move each id sequence past the largest copied id."""
    for table in t.metadata.sorted_tables:
        for column in table.primary_key.columns:
            if isinstance(column.type, Integer) and column.autoincrement is True:
                conn.execute(text(
                    f"SELECT setval(pg_get_serial_sequence(:table, :column), "
                    f"COALESCE((SELECT MAX({column.name}) FROM {table.name}), 0) + 1, false)"
                ), {"table": table.name, "column": column.name})


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source", help="the SQLite URL, e.g. sqlite:///var/digest.sqlite3")
    parser.add_argument("target", help="the PostgreSQL URL, e.g. postgresql://digest@db.internal/digest")
    args = parser.parse_args(argv)
    try:
        copied = copy_database(args.source, args.target)
    except DigestError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except SQLAlchemyError as err:  # the copy was rolled back: the target is as it was
        print(f"error: copy failed, nothing written: {' '.join(str(err).split())[:300]}", file=sys.stderr)
        return 1
    for name, count in copied.items():
        print(f"table={name} rows={count}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
