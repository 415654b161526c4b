"""`python -m emer_builder.schemas`: print the field table of the current schema (docs/generate.py writes it into docs/reference/fields.md)."""

from emer_builder.schemas import SCHEMA

print(SCHEMA.field_table())
