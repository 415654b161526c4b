"""`python -m emer_builder.schemas`: print the field table of the current schema (pasted into README.md)."""

from emer_builder.schemas import SCHEMA

print(SCHEMA.field_table())
