"""Statements a service builds on its own tables: pages in keyset order, whole-row saves."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from mesh.runtime.storage.schema import UtcDateTime


def keyset_page(
    table: sa.Table, cursor: tuple[datetime, str] | None, limit: int, *, newest_first: bool
) -> sa.Select[Any]:
    """One page of `table` in (create_time, id) order, after `cursor`, at most `limit` rows.

    Keyset pagination: stable while rows are added, and an index on (create_time, id)
    serves it at any depth. Callers add their own filters to the select.
    """
    key = sa.tuple_(table.c.create_time, table.c.id)
    order = (
        (table.c.create_time.desc(), table.c.id.desc())
        if newest_first
        else (table.c.create_time, table.c.id)
    )
    query = table.select().order_by(*order).limit(limit)
    if cursor is not None:
        bound = sa.tuple_(sa.literal(cursor[0], UtcDateTime), sa.literal(cursor[1]))
        query = query.where(key < bound if newest_first else key > bound)
    return query


#: The parameter that names the row a `whole_row_update` sets.
_ROW_ID = "b_id"


def whole_row_update(table: sa.Table, *conditions: sa.ColumnElement[bool]) -> sa.Update:
    """An update, built once, of the row of `table` with a given `id` (and `conditions`),
    setting the columns its parameters name (`whole_row_parameters`)."""
    return table.update().where(table.c.id == sa.bindparam(_ROW_ID), *conditions)


def whole_row_parameters(row: Mapping[str, Any], **conditions: Any) -> dict[str, Any]:
    """The parameters of a `whole_row_update` of `row` (which holds its `id`), with the
    values of the update's own `conditions`."""
    return {**row, _ROW_ID: row["id"], **conditions}
