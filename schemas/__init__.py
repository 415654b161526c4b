"""Record schemas: the single source of truth for every derived layout."""

from emer_builder.core.errors import SchemaError
from emer_builder.schemas.fields import Field, FieldGroup, RecordSchema, list_of, struct
from emer_builder.schemas.v1 import SCHEMA

__all__ = ["SCHEMA", "Field", "FieldGroup", "RecordSchema", "SchemaError", "list_of", "struct"]
