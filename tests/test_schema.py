import copy

import pyarrow as pa
import pytest
from emer_builder.schemas import SCHEMA, FieldGroup, SchemaError
from emer_builder.schemas.fields import Field
from emer_builder.schemas.v1 import EGEMAPS_V02_FUNCTIONALS


def test_egemaps_names_are_what_opensmile_produces():
    import numpy as np
    import opensmile

    smile = opensmile.Smile(feature_set=opensmile.FeatureSet.eGeMAPSv02, feature_level=opensmile.FeatureLevel.Functionals)
    names = tuple(smile.process_signal(np.zeros(16000, dtype=np.float32), 16000).columns)
    assert names == EGEMAPS_V02_FUNCTIONALS
    assert len(EGEMAPS_V02_FUNCTIONALS) == 88


def test_derived_layouts_agree():
    arrow = SCHEMA.arrow_schema()
    assert arrow.names == ["key", "split", "source_path", "media", "transcript", "faces", "acoustics", "explanation", "provenance", "segment", "labels", "video"]
    assert arrow.metadata[b"emer_schema_version"] == b"1.4.0"
    features = SCHEMA.features()
    assert list(features) == arrow.names
    assert features.arrow_schema.field("acoustics").type.field("egemaps").type.num_fields == 88
    table = SCHEMA.field_table()
    assert "| `faces.crops[].box.x` |" in table
    assert "| `acoustics.egemaps.F0semitoneFrom27.5Hz_sma3nz_amean` |" in table


def test_media_group_1_2_only_adds_documented_fields():
    from emer_builder.schemas.v1 import MEDIA

    names = [f.name for f in MEDIA.fields]
    v1_1 = ["container", "size_bytes", "sha256", "duration_s", "video_codec", "width", "height", "fps", "has_audio", "audio_codec", "audio_sample_rate", "sampled_fps", "frames_sampled"]
    added = ["audio_stream", "audio_language", "other_audio_streams", "declared_duration_s", "decoded_duration_s", "decoded_fraction", "truncated"]
    assert names == v1_1 + added  # a minor version: the 1.1 fields keep their names, types and order
    types = SCHEMA.field_types()
    assert types["media.other_audio_streams"] == "list<struct>" and types["media.other_audio_streams[].is_default"] == "bool"
    assert types["media.decoded_duration_s"] == "double" and types["media.truncated"] == "bool" and types["media.audio_stream"] == "int32"
    table = SCHEMA.field_table()
    for name in added:
        assert f"| `media.{name}` |" in table
    assert all(len(f.doc) > 20 for f in MEDIA.fields if f.name in added)


def test_plugin_group_extends_without_core_edits():
    group = FieldGroup("brightness", "mean frame brightness", (Field("mean", pa.float32(), "mean luma 0-255"),))
    extended = SCHEMA.with_group(group)
    assert extended.arrow_schema().names[-1] == "brightness"
    assert SCHEMA.arrow_schema().names[-1] == "video"  # the base schema is untouched
    with pytest.raises(ValueError, match="already exists"):
        extended.with_group(group)


def test_derived_layouts_are_built_once_and_follow_the_fields(monkeypatch: pytest.MonkeyPatch):
    # validate and conform run once per record: the Arrow structs of every group are built once, not per call
    schema = copy.deepcopy(SCHEMA)
    fresh = pa.schema([f.arrow() for f in [*schema.top_fields, *(g.as_field() for g in schema.groups)]], metadata={"emer_schema_version": schema.version})
    assert schema.arrow_schema() == fresh and schema.arrow_schema().metadata == fresh.metadata
    built = []
    original = FieldGroup.as_field
    monkeypatch.setattr(FieldGroup, "as_field", lambda g: built.append(g.name) or original(g))
    for _ in range(3):
        schema.all_fields(), schema.column_names(), schema.arrow_schema()
    assert built == []
    group = FieldGroup("brightness", "mean frame brightness", (Field("mean", pa.float32(), "mean luma 0-255"),))
    schema.groups.append(group)  # a list changed in place is seen too
    assert schema.column_names()[-1] == "brightness" and schema.arrow_schema().names[-1] == "brightness"
    schema.version = "9.9.9"
    assert schema.arrow_schema().metadata[b"emer_schema_version"] == b"9.9.9"
    names = schema.column_names()
    names.append("mine")  # callers get their own lists
    assert "mine" not in schema.column_names()


def test_validate_names_the_bad_field(demo_build):
    import pyarrow.parquet as pq

    out, _ = demo_build
    record = pq.read_table(next((out / "data").glob("train-*.parquet"))).to_pylist()[0]
    SCHEMA.validate(record)
    bad = copy.deepcopy(record)
    bad["media"]["width"] = "wide"
    with pytest.raises(SchemaError, match="media.width: expected an integer"):
        SCHEMA.validate(bad)
    bad = copy.deepcopy(record)
    bad["acoustics"]["egemaps"]["loudness_sma3_amean"] = float("nan")
    with pytest.raises(SchemaError, match="loudness_sma3_amean: not a finite number"):
        SCHEMA.validate(bad)
    bad = copy.deepcopy(record)
    del bad["faces"]
    with pytest.raises(SchemaError, match="missing \\['faces'\\]"):
        SCHEMA.validate(bad)
