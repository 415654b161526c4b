from pathlib import Path

from emer_builder.schemas import SCHEMA

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_field_table_is_generated_from_the_schema():
    text = README.read_text()
    start, end = text.index("<!-- fields:start -->"), text.index("<!-- fields:end -->")
    assert text[start:end].split("\n", 1)[1].strip() == SCHEMA.field_table()


def test_readme_gives_the_two_commands():
    text = README.read_text()
    assert "make demo" in text and "make test" in text
