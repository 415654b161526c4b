"""The schema mechanism: fields with Arrow types and docs, grouped per stage.

Everything that describes a record (the Parquet schema, the json in the tar, the `datasets`
Features in the dataset card, the README's field table) is derived from one `RecordSchema`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
from emer_builder.core.errors import SchemaError


@dataclass(frozen=True)
class Field:
    """One named value of a record, with its Arrow type and a line of documentation."""

    name: str
    type: pa.DataType
    doc: str
    nullable: bool = True
    # Sub-fields documented in the field table (for struct and list<struct> types).
    children: tuple[Field, ...] = ()

    def arrow(self) -> pa.Field:
        return pa.field(self.name, self.type, nullable=self.nullable)


def struct(name: str, doc: str, children: list[Field] | tuple[Field, ...], nullable: bool = True) -> Field:
    """A struct field whose Arrow type is built from its documented children."""
    children = tuple(children)
    return Field(name, pa.struct([c.arrow() for c in children]), doc, nullable, children)


def list_of(name: str, doc: str, children: list[Field] | tuple[Field, ...]) -> Field:
    """A list of structs, documented child by child."""
    children = tuple(children)
    item = pa.struct([c.arrow() for c in children])
    return Field(name, pa.list_(item), doc, True, children)


@dataclass(frozen=True)
class FieldGroup:
    """The fields one stage adds to a record, stored as one struct column named after the group."""

    name: str
    doc: str
    fields: tuple[Field, ...]

    def as_field(self) -> Field:
        return struct(self.name, self.doc, self.fields)


@dataclass
class RecordSchema:
    """A versioned record layout: top-level fields plus one struct column per field group."""

    version: str
    top_fields: list[Field]
    groups: list[FieldGroup] = field(default_factory=list)
    # what all_fields / column_names / arrow_schema derive, kept for the fields it was derived from
    # (each record is validated and conformed: rebuilding every group's Arrow struct each time was most of validate's own work)
    _derived: tuple[tuple[Any, ...], list[Field], list[str], pa.Schema] | None = field(default=None, init=False, repr=False, compare=False)

    def _fields(self) -> tuple[list[Field], list[str], pa.Schema]:
        """(all fields, column names, Arrow schema), derived again only when the version or a field or group is another."""
        key = (self.version, *self.top_fields, None, *self.groups)
        kept = self._derived
        if kept is None or len(kept[0]) != len(key) or any(a is not b for a, b in zip(kept[0], key, strict=True)):
            fields = [*self.top_fields, *(g.as_field() for g in self.groups)]
            arrow = pa.schema([f.arrow() for f in fields], metadata={"emer_schema_version": self.version})
            kept = self._derived = (key, fields, [f.name for f in fields], arrow)
        return kept[1], kept[2], kept[3]

    def with_group(self, group: FieldGroup) -> RecordSchema:
        """A copy with one more field group: how plug-in stages extend records without core edits."""
        if group.name in self.column_names():
            raise ValueError(f"field group {group.name!r} already exists in schema {self.version}")
        return RecordSchema(self.version, list(self.top_fields), [*self.groups, group])

    def all_fields(self) -> list[Field]:
        return list(self._fields()[0])

    def column_names(self) -> list[str]:
        return list(self._fields()[1])

    def arrow_schema(self) -> pa.Schema:
        return self._fields()[2]

    def features(self) -> Any:
        """The `datasets.Features` of the Parquet rows."""
        import datasets

        return datasets.Features.from_arrow_schema(self.arrow_schema())

    def validate(self, record: dict[str, Any]) -> None:
        """Raise `SchemaError` naming the first field that does not fit the schema."""
        fields, names, _ = self._fields()
        missing = set(names) - set(record)
        extra = set(record) - set(names)
        if missing or extra:
            raise SchemaError(f"record columns differ from schema {self.version}: missing {sorted(missing)}, unexpected {sorted(extra)}")
        for f in fields:
            _check(f.name, f.type, f.nullable, record[f.name])

    def conform(self, record: dict[str, Any]) -> dict[str, Any]:
        """The record as the Parquet table stores it (float32 values, key order), so the json in the
        tar and the Parquet row are the same data."""
        return pa.Table.from_pylist([record], schema=self.arrow_schema()).to_pylist()[0]

    def field_paths(self) -> list[tuple[str, Field]]:
        """Every field with its dotted path (`faces.crops[].box.x`), parents before children."""
        found: list[tuple[str, Field]] = []

        def walk(prefix: str, fields: tuple[Field, ...] | list[Field]) -> None:
            for f in fields:
                path = f"{prefix}{f.name}"
                found.append((path, f))
                if f.children:
                    walk(path + ("[]." if pa.types.is_list(f.type) else "."), f.children)

        walk("", self.all_fields())
        return found

    def field_types(self) -> dict[str, str]:
        """Dotted path -> type name: what a release compares to tell added from changed fields."""
        return {path: _type_name(f.type) for path, f in self.field_paths()}

    def field_table(self) -> str:
        """Markdown table of every field, nested ones as dotted paths."""
        rows = ["| field | type | description |", "|---|---|---|"]
        rows += [f"| `{path}` | `{_type_name(f.type)}` | {f.doc} |" for path, f in self.field_paths()]
        return "\n".join(rows)


def _type_name(t: pa.DataType) -> str:
    if pa.types.is_struct(t):
        return "struct"
    if pa.types.is_list(t):
        return f"list<{_type_name(t.value_type)}>"
    return str(t)


def _check(path: str, t: pa.DataType, nullable: bool, value: Any) -> None:
    if value is None:
        if not nullable:
            raise SchemaError(f"{path}: null in a non-nullable field")
        return
    if pa.types.is_struct(t):
        if not isinstance(value, dict):
            raise SchemaError(f"{path}: expected an object, got {type(value).__name__}")
        names = {t.field(i).name for i in range(t.num_fields)}
        if set(value) != names:
            raise SchemaError(f"{path}: keys {sorted(set(value) ^ names)} differ from the schema")
        for i in range(t.num_fields):
            sub = t.field(i)
            _check(f"{path}.{sub.name}", sub.type, sub.nullable, value[sub.name])
    elif pa.types.is_list(t):
        if not isinstance(value, list):
            raise SchemaError(f"{path}: expected a list, got {type(value).__name__}")
        for i, item in enumerate(value):
            _check(f"{path}[{i}]", t.value_type, True, item)
    elif pa.types.is_floating(t):
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            raise SchemaError(f"{path}: expected a number, got {type(value).__name__}")
        if math.isnan(value) or math.isinf(value):
            raise SchemaError(f"{path}: not a finite number")
    elif pa.types.is_integer(t):
        if not isinstance(value, int) or isinstance(value, bool):
            raise SchemaError(f"{path}: expected an integer, got {type(value).__name__}")
    elif pa.types.is_boolean(t):
        if not isinstance(value, bool):
            raise SchemaError(f"{path}: expected true/false, got {type(value).__name__}")
    elif pa.types.is_string(t):
        if not isinstance(value, str):
            raise SchemaError(f"{path}: expected a string, got {type(value).__name__}")
