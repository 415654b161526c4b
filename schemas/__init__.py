"""Record schemas: the single source of truth for every derived layout."""

from schemas.fields import Field, FieldGroup, RecordSchema, SchemaError, list_of, struct
from schemas.v1 import SCHEMA

__all__ = ["SCHEMA", "Field", "FieldGroup", "RecordSchema", "SchemaError", "list_of", "struct"]
