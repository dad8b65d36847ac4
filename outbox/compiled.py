"""An UPDATE of one row whose SQL is built once (issue 13, item 6: the send path's hot writes).

`Model.objects.filter(...).update(...)` builds its SQL again every call: ~0.3 ms of CPU, for
the same statement, two or three times a mail. A RowUpdate holds the statement with the
model's own table and column names and quoting, and prepares each value with its field exactly
as the ORM would (get_db_prep_save: datetimes, JSON, …), so what is written is the same.
"""

from __future__ import annotations

import string
from collections.abc import Mapping, Sequence
from typing import Any

from django.db import connections, router
from django.db.models import Model


class RowUpdate:
    """`UPDATE <table> SET f = %s, …, n = n + 1, … WHERE <where>`; `where` names fields as
    {field} and takes its values in the order of the mapping given to run()."""

    def __init__(
        self,
        model: type[Model],
        *,
        sets: Sequence[str],
        where: str,
        increments: Sequence[str] = (),
        returning: Sequence[str] = (),
    ) -> None:
        self.model, self.sets, self.where, self.increments = model, tuple(sets), where, increments
        self.returning = tuple(returning)  # columns the updated row gives back (run_returning)
        self._sql: dict[str, str] = {}  # per database alias (its vendor's quoting)

    def _field(self, name: str):
        meta = self.model._meta
        return meta.pk if name == "pk" else meta.get_field(name)

    def sql(self, connection) -> str:
        if connection.alias not in self._sql:
            quote = connection.ops.quote_name

            def column(name: str) -> str:
                return quote(self._field(name).column)

            assignments = [f"{column(name)} = %s" for name in self.sets]
            assignments += [f"{column(name)} = {column(name)} + 1" for name in self.increments]
            names = {
                name: column(name)
                for name in {*self.sets, *self.increments, "pk", *_placeholders(self.where)}
            }
            # Identifiers from the model's meta, quoted; every value is a parameter.
            table, sets = quote(self.model._meta.db_table), ", ".join(assignments)
            where = self.where.format(**names)
            sql = f"UPDATE {table} SET {sets} WHERE {where}"  # noqa: S608
            if self.returning:
                sql += f" RETURNING {', '.join(column(name) for name in self.returning)}"
            self._sql[connection.alias] = sql
        return self._sql[connection.alias]

    def run(self, values: Mapping[str, Any], where: Mapping[str, Any]) -> int:
        """Rows updated. `values` has exactly the fields of `sets`; `where` one value per %s."""
        if self.returning:
            raise TypeError("a RowUpdate with `returning` is run with run_returning()")
        connection, params = self._params(values, where)
        with connection.cursor() as cursor:
            cursor.execute(self.sql(connection), params)
            return cursor.rowcount

    def run_returning(self, values: Mapping[str, Any], where: Mapping[str, Any]) -> tuple | None:
        """The `returning` columns of the row updated (as the database holds them after the
        update: an increment's result, not a value read before), or None when no row matched.
        UPDATE … RETURNING: PostgreSQL, SQLite ≥ 3.35."""
        connection, params = self._params(values, where)
        with connection.cursor() as cursor:
            cursor.execute(self.sql(connection), params)
            return cursor.fetchone()

    def _params(self, values: Mapping[str, Any], where: Mapping[str, Any]):
        connection = connections[router.db_for_write(self.model)]
        params = [
            self._field(name).get_db_prep_save(values[name], connection) for name in self.sets
        ]
        params += [
            self._field(name).get_db_prep_save(value, connection) for name, value in where.items()
        ]
        return connection, params


def _placeholders(template: str) -> set[str]:
    return {name for _, name, _, _ in string.Formatter().parse(template) if name}
