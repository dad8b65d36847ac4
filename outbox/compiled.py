"""Statements of the hot path whose SQL is built once (issue 13, item 6).

`Model.objects.filter(...).update(...)` builds its SQL again every call: ~0.3 ms of CPU, for
the same statement, two or three times a mail; `bulk_create` runs four generic functions for
every value of every row. A RowUpdate (one row's UPDATE) and a RowsInsert (a chunk's INSERT)
hold the statement with the model's own table and column names and quoting, and prepare each
value with its field exactly as the ORM would (pre_save, get_db_prep_save: datetimes, JSON, …),
so what is written is the same; only values the ORM passes on unchanged skip the field.
"""

from __future__ import annotations

import datetime
import string
from collections.abc import Mapping, Sequence
from typing import Any

from django.db import connections, models, router
from django.db.models import Field, ForeignKey, JSONField, Model


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
        params = [self._prepare(name, values[name], connection) for name in self.sets]
        params += [self._prepare(name, value, connection) for name, value in where.items()]
        return connection, params

    def _prepare(self, name: str, value: Any, connection) -> Any:
        return _prepared(self._field(name), value, connection)


MAX_ROWS = 100


class RowsInsert:
    """`INSERT INTO <table> (…) VALUES (…), (…) … RETURNING <pk>` for model instances, as
    `Model.objects.bulk_create(objs)` writes them (every concrete field but an unset auto
    primary key, defaults and auto_now(_add) as the instances and pre_save have them); each
    instance gets its primary key and is no longer "adding". Where the database cannot return
    the keys of a multi-row INSERT, bulk_create does it."""

    def __init__(self, model: type[Model]) -> None:
        self.model = model
        meta = model._meta
        self.fields = [f for f in meta.concrete_fields if f is not meta.auto_field]
        # Per field, decided once (a chunk asks 30 fields × 100 rows): whether its pre_save does
        # more than read the attribute (auto_now, a file to commit), and whether it is JSON.
        self._plan = [
            (f, type(f).pre_save is not Field.pre_save, isinstance(f, JSONField))
            for f in self.fields
        ]
        self._sql: dict[tuple[str, int], str] = {}

    def run(self, objs: Sequence[Model]) -> None:
        objs = list(objs)
        if not objs:
            return
        connection = connections[router.db_for_write(self.model)]
        if not connection.features.can_return_rows_from_bulk_insert or any(
            obj.pk is not None for obj in objs
        ):
            self.model._default_manager.bulk_create(objs)  # keys given: bulk_create's rules
            return
        for obj in objs:  # a related object saved after it was assigned; an unsaved one refused
            obj._prepare_related_fields_for_save(operation_name="bulk_create")
        # Rows a statement: as many as the database takes, at most MAX_ROWS (the one statement
        # kept for a full chunk stays small; a job's chunk is about that size).
        limit = connection.ops.bulk_batch_size(self.fields, [None] * MAX_ROWS)
        size = max(min(limit, MAX_ROWS), 1)
        json_cache: dict[int, Any] = {}  # one dump of a dict all rows share (a sender snapshot)
        for start in range(0, len(objs), size):
            chunk = objs[start : start + size]
            params: list[Any] = []
            for obj in chunk:
                for field, pre_save, is_json in self._plan:
                    if pre_save:
                        value = field.pre_save(obj, add=True)
                    else:
                        value = getattr(obj, field.attname)
                    if is_json and isinstance(value, dict | list):
                        if id(value) not in json_cache:
                            json_cache[id(value)] = field.get_db_prep_save(value, connection)
                        params.append(json_cache[id(value)])
                    else:
                        params.append(_prepared(field, value, connection))
            with connection.cursor() as cursor:
                cursor.execute(self.sql(connection, len(chunk), cache=len(chunk) == size), params)
                keys = cursor.fetchall()
            for obj, (key,) in zip(chunk, keys, strict=True):
                setattr(obj, self.model._meta.pk.attname, key)
                obj._state.adding, obj._state.db = False, connection.alias

    def sql(self, connection, rows: int, *, cache: bool = True) -> str:
        """The statement for `rows` rows; kept for a full chunk only (a chunk's last rows, of
        any count up to it, are written by a statement made for them)."""
        key = (connection.alias, rows)
        if not cache:
            return self._statement(connection, rows)
        if key not in self._sql:
            self._sql[key] = self._statement(connection, rows)
        return self._sql[key]

    def _statement(self, connection, rows: int) -> str:
        quote = connection.ops.quote_name
        columns = ", ".join(quote(field.column) for field in self.fields)
        row = "(" + ", ".join(["%s"] * len(self.fields)) + ")"
        table, pk = quote(self.model._meta.db_table), quote(self.model._meta.pk.column)
        values = ", ".join([row] * rows)
        return f"INSERT INTO {table} ({columns}) VALUES {values} RETURNING {pk}"  # noqa: S608


def _prepared(field: Field, value: Any, connection) -> Any:
    """The value as the field's get_db_prep_save() gives it. For Django's own plain fields
    (exactly those classes: a field of another class, an encrypted one, may change any value),
    what the ORM passes on unchanged (a str for a text column, an int for an integer one or a
    foreign key to one) and an aware datetime (which the field only hands to the backend's
    adapter) skip the field's generic steps; every other value goes through the field."""
    rule = _RULES.get(type(field))
    if rule is ForeignKey and type(value) is int:
        rule = _RULES.get(type(field.target_field))
    if (rule is str and isinstance(value, str)) or (rule is int and type(value) is int):
        return value
    if rule is datetime.datetime and type(value) is datetime.datetime and value.tzinfo:
        return connection.ops.adapt_datetimefield_value(value)
    return field.get_db_prep_save(value, connection)


_RULES: dict[type, type] = {
    **dict.fromkeys((models.CharField, models.TextField, models.EmailField), str),
    **dict.fromkeys(
        (
            models.IntegerField,
            models.BigIntegerField,
            models.SmallIntegerField,
            models.PositiveIntegerField,
            models.PositiveBigIntegerField,
            models.PositiveSmallIntegerField,
            models.AutoField,
            models.BigAutoField,
        ),
        int,
    ),
    models.DateTimeField: datetime.datetime,
    ForeignKey: ForeignKey,
}


def _placeholders(template: str) -> set[str]:
    return {name for _, name, _, _ in string.Formatter().parse(template) if name}
