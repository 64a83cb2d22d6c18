"""Set-based batch writes for read tables that hold one row per thing.

For each table a batch costs three statements whatever its size: load the rows
the batch touches (one ``SELECT ... = ANY``), fold the batch's events onto them
in Python, then write the results (one pipelined upsert, one delete). Folding
is pure, so each table's rules are unit-tested without a database.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from operator import itemgetter
from typing import Any, ClassVar, Final

import orjson
from psycopg import sql
from psycopg.types.json import Jsonb

from projections.base import Cursor, Fact, Projection

__all__ = [
    "AggregateRowFold",
    "FoldingProjection",
    "Key",
    "MissingRow",
    "Row",
    "Table",
    "TableFold",
    "jsonb",
]

Row = dict[str, Any]
Key = tuple[Any, ...]
# Below this many rows a pipelined executemany is as fast and needs no staging.
_COPY_FROM_ROWS: Final = 64
# PostgreSQL's first OID for objects a database creates: types below it are
# built in, the same in every database, so a table's can be remembered.
_FIRST_USER_OID: Final = 16384


def jsonb(value: Any) -> Jsonb:
    """``value`` for a jsonb column, serialised by orjson: several times faster
    than the json.dumps psycopg uses by default; read models hold JSON-ready
    values (ids and times already strings); like json.dumps, it takes keys that
    are not strings."""
    return Jsonb(value, dumps=_dumps_json)


def _dumps_json(value: Any) -> bytes:
    return orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS)


class MissingRow(Exception):
    """An event changes a row the table does not have: the log and the table
    disagree, so the projection must stop rather than guess."""


@dataclass(frozen=True)
class Table:
    """A read table's shape; the statements are composed from it once, with
    identifiers quoted by psycopg and values always passed as parameters."""

    name: str
    key: tuple[tuple[str, str], ...]  # (column, PostgreSQL type) of the primary key
    columns: tuple[str, ...]  # every column, key included
    jsonb: frozenset[str] = frozenset()
    select: sql.Composed = field(init=False)
    upsert: sql.Composed = field(init=False)
    delete: sql.Composed = field(init=False)
    stage: sql.Composed = field(init=False)
    copy_to_stage: sql.Composed = field(init=False)
    copy_to_table: sql.Composed = field(init=False)
    column_types: sql.Composed = field(init=False)
    upsert_from_stage: sql.Composed = field(init=False)
    # Type OIDs of ``columns``, learnt at the first COPY (binary COPY needs them).
    _copy_types: tuple[int, ...] = field(init=False, default=(), compare=False, repr=False)

    def __post_init__(self) -> None:
        key_names = [name for name, _ in self.key]
        table = sql.Identifier(self.name)
        cols = sql.SQL(", ").join(map(sql.Identifier, self.columns))
        unnest = sql.SQL(", ").join(
            sql.SQL("{}::{}[]").format(sql.Placeholder(), sql.SQL(pg_type))
            for _, pg_type in self.key
        )
        keys = sql.SQL(", ").join(map(sql.Identifier, key_names))
        joined = sql.SQL(" AND ").join(
            sql.SQL("t.{0} = k.{0}").format(sql.Identifier(name)) for name in key_names
        )
        object.__setattr__(
            self,
            "select",
            sql.SQL("SELECT t.* FROM {} t JOIN unnest({}) AS k({}) ON {}").format(
                table, unnest, keys, joined
            ),
        )
        updates = [c for c in self.columns if c not in key_names]
        set_updates = sql.SQL(", ").join(
            sql.SQL("{0} = EXCLUDED.{0}").format(sql.Identifier(c)) for c in updates
        )
        stage = sql.Identifier(f"stage_{self.name}")
        object.__setattr__(
            self,
            "stage",
            sql.SQL("CREATE TEMP TABLE IF NOT EXISTS {} (LIKE {}) ON COMMIT DELETE ROWS").format(
                stage, table
            ),
        )
        object.__setattr__(
            self,
            "copy_to_stage",
            sql.SQL("COPY {} ({}) FROM STDIN (FORMAT BINARY)").format(stage, cols),
        )
        object.__setattr__(
            self,
            "copy_to_table",
            sql.SQL("COPY {} ({}) FROM STDIN (FORMAT BINARY)").format(table, cols),
        )
        object.__setattr__(
            self, "column_types", sql.SQL("SELECT {} FROM {} LIMIT 0").format(cols, table)
        )
        object.__setattr__(
            self,
            "upsert_from_stage",
            sql.SQL(
                "INSERT INTO {} ({}) SELECT {} FROM {} ON CONFLICT ({}) DO UPDATE SET {}"
            ).format(table, cols, cols, stage, keys, set_updates),
        )
        object.__setattr__(
            self,
            "upsert",
            sql.SQL("INSERT INTO {} ({}) VALUES ({}) ON CONFLICT ({}) DO UPDATE SET {}").format(
                table,
                cols,
                sql.SQL(", ").join(map(sql.Placeholder, self.columns)),
                keys,
                sql.SQL(", ").join(
                    sql.SQL("{0} = EXCLUDED.{0}").format(sql.Identifier(c)) for c in updates
                ),
            ),
        )
        object.__setattr__(
            self,
            "delete",
            sql.SQL("DELETE FROM {} WHERE {}").format(
                table,
                sql.SQL(" AND ").join(
                    sql.SQL("{} = %s").format(sql.Identifier(name)) for name in key_names
                ),
            ),
        )

    def key_of(self, row: Row) -> Key:
        return tuple(row[name] for name, _ in self.key)

    def load(self, cur: Cursor, keys: Sequence[Key]) -> dict[Key, Row]:
        columns = [list(column) for column in zip(*keys, strict=True)]
        cur.execute(self.select, columns)
        return {self.key_of(row): row for row in cur.fetchall()}

    def write(
        self,
        cur: Cursor,
        upserts: Sequence[Row],
        deletes: Sequence[Key],
        inserts: Sequence[Row] = (),
    ) -> None:
        """``inserts`` are rows known not to be in the table yet."""
        if len(inserts) >= _COPY_FROM_ROWS:
            self._copy(cur, self.copy_to_table, inserts)
        else:
            upserts = [*upserts, *inserts]
        if len(upserts) >= _COPY_FROM_ROWS:
            self._copy_upsert(cur, upserts)
        elif upserts:
            params = [
                {c: jsonb(v) if c in self.jsonb and v is not None else v for c, v in r.items()}
                for r in upserts
            ]
            cur.executemany(self.upsert, params)
        if deletes:
            cur.executemany(self.delete, deletes)

    def _copy_upsert(self, cur: Cursor, upserts: Sequence[Row]) -> None:
        """Large batches (rebuilds, catch-up) go through COPY into a temporary
        table and one INSERT ... SELECT: far fewer round trips than a row each."""
        cur.execute(self.stage)
        self._copy(cur, self.copy_to_stage, upserts)
        cur.execute(self.upsert_from_stage)

    def _copy(self, cur: Cursor, statement: sql.Composed, rows: Sequence[Row]) -> None:
        """Binary COPY: UUIDs, timestamps and arrays cost far less to send than
        to format as text (bench B3)."""
        types = self._types_of_columns(cur)
        with cur.copy(statement) as copy:
            copy.set_types(types)
            # itemgetter of one column gives the value itself, not a row
            if self.jsonb or len(self.columns) == 1:
                for row in rows:
                    copy.write_row(
                        [
                            jsonb(row[c]) if c in self.jsonb and row[c] is not None else row[c]
                            for c in self.columns
                        ]
                    )
            else:
                values = itemgetter(*self.columns)
                for row in rows:
                    copy.write_row(values(row))

    def _types_of_columns(self, cur: Cursor) -> tuple[int, ...]:
        if self._copy_types:
            return self._copy_types
        cur.execute(self.column_types)
        assert cur.description is not None
        types = tuple(column.type_code for column in cur.description)
        if all(oid < _FIRST_USER_OID for oid in types):
            # One assignment: runners of two generations may share the table.
            object.__setattr__(self, "_copy_types", types)
        return types


class TableFold(ABC):
    """How the events of a batch change one table."""

    table: ClassVar[Table]

    @abstractmethod
    def keys(self, fact: Fact) -> Iterable[Key]:
        """The rows ``fact`` changes (none if it does not concern this table)."""

    @abstractmethod
    def fold(self, key: Key, row: Row | None, fact: Fact) -> Row | None:
        """The row after ``fact``; None removes it. Must not mutate ``row``."""

    # Whether the rows ``creates`` makes cannot be in the table already (they
    # are an aggregate's, made by its creation, which happens once): those are
    # then inserted, with no conflict to check.
    creates_new_rows: ClassVar[bool] = False

    def creates(self, fact: Fact) -> bool:
        """Whether ``fact`` makes its rows from nothing (so they need no loading)."""
        return False

    def apply(self, cur: Cursor, facts: Sequence[Fact]) -> None:
        # Each key's hash is computed in Python (UUID.__hash__), so a rebuild's
        # batches look each key up as few times as they can (bench B3).
        keyed = [(fact, tuple(self.keys(fact))) for fact in facts]
        # key -> whether the batch creates it before anything else touches it
        touched: dict[Key, bool] = {}
        for fact, keys in keyed:
            if keys:
                created = self.creates(fact)
                for key in keys:
                    touched.setdefault(key, created)
        if not touched:
            return
        to_load = [key for key, created in touched.items() if not created]
        stored = self.table.load(cur, to_load) if to_load else {}
        rows: dict[Key, Row | None] = dict.fromkeys(touched)
        rows.update(stored)
        for fact, keys in keyed:
            for key in keys:
                rows[key] = self.fold(key, rows[key], fact)
        new = self.creates_new_rows
        inserts: list[Row] = []
        upserts: list[Row] = []
        deletes: list[Key] = []
        for (key, row), created in zip(rows.items(), touched.values(), strict=True):
            if row is None:
                if key in stored:
                    deletes.append(key)
            elif new and created:
                inserts.append(row)
            else:
                upserts.append(row)
        self.table.write(cur, upserts, deletes, inserts)


class AggregateRowFold(TableFold):
    """One row per aggregate, keyed by its id, carrying the aggregate's version,
    last change time and position. Subclasses say how the creating event makes
    the row and what each later event changes."""

    what: ClassVar[str]  # for error messages: "entry", "prompt", ...
    created_by: ClassVar[str] = "Created"
    creates_new_rows = True

    def keys(self, fact: Fact) -> Iterable[Key]:
        return ((fact.aggregate_id,),)

    def creates(self, fact: Fact) -> bool:
        return fact.name == self.created_by

    @abstractmethod
    def created(self, fact: Fact) -> Row:
        """The new row's own columns, in a new dict (the fold adds the stamp and
        creation columns to it)."""

    @abstractmethod
    def changed(self, row: Row, fact: Fact) -> Row | None:
        """The columns ``fact`` changes; None removes the row."""

    def fold(self, key: Key, row: Row | None, fact: Fact) -> Row | None:
        timestamp = fact.data["timestamp"]
        if self.creates(fact):
            made = self.created(fact)
            made["created_at"] = made["updated_at"] = timestamp
            made["version"] = fact.version
            made["position"] = fact.position
            return made
        if row is None:
            raise MissingRow(f"{self.what} {fact.aggregate_id} has no row for {fact.name}")
        change = self.changed(row, fact)
        if change is None:
            return None
        return {
            **row,
            **change,
            "version": fact.version,
            "updated_at": timestamp,
            "position": fact.position,
        }


class FoldingProjection(Projection):
    """A projection made of table folds, applied one table after another."""

    folds: ClassVar[tuple[TableFold, ...]]
    handled: ClassVar[frozenset[str]]

    @property
    def topics(self) -> frozenset[str]:
        return self.handled

    def apply(self, cur: Cursor, facts: Sequence[Fact]) -> None:
        for table_fold in self.folds:
            table_fold.apply(cur, facts)
