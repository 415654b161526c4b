from collections import Counter
from pathlib import Path

import pytest
from emer_builder.core.errors import UserError
from emer_builder.transforms.split import SplitAssigner, group_value, hash_split

RATIOS = {"train": 0.8, "validation": 0.1, "test": 0.1}


def test_hash_split_is_stable_and_follows_ratios():
    counts = Counter(hash_split(f"sample_{i:08d}", RATIOS) for i in range(20_000))
    assert abs(counts["train"] / 20_000 - 0.8) < 0.01
    assert abs(counts["validation"] / 20_000 - 0.1) < 0.01
    assert abs(counts["test"] / 20_000 - 0.1) < 0.01
    # pinned values: a change here would move clips between splits of published datasets
    assert [hash_split(k, RATIOS) for k in ("sample_00000648", "sample_00000870", "jesper_intro")] == ["train", "train", "validation"]
    reordered = {"test": 0.1, "train": 0.8, "validation": 0.1}
    keys = [f"k{i}" for i in range(2000)]
    assert [hash_split(k, reordered) for k in keys] == [hash_split(k, RATIOS) for k in keys]  # order of ratios is irrelevant
    moved = sum(hash_split(k, RATIOS, seed="other") != hash_split(k, RATIOS) for k in keys)
    assert 400 < moved < 1000  # a new seed reshuffles about 1 - (0.8² + 0.1² + 0.1²) = 34% of keys


def test_group_key_keeps_a_speaker_in_one_split():
    assign = SplitAssigner(RATIOS, group_by="key", group_pattern=r"^(spk\d+)_")
    by_speaker: dict[str, set[str]] = {}
    for spk in range(50):
        for utt in range(8):
            rec = {"key": f"spk{spk:03d}_utt{utt}"}
            by_speaker.setdefault(f"spk{spk:03d}", set()).add(assign(rec))
    assert all(len(splits) == 1 for splits in by_speaker.values())
    assert {s for v in by_speaker.values() for s in v} == {"train", "validation", "test"}


def test_group_by_a_record_field():
    rec = {"key": "a", "media": {"sha256": "abc"}}
    assert group_value(rec, "media.sha256") == "abc"
    with pytest.raises(KeyError, match="media.nope"):
        group_value(rec, "media.nope")


def test_split_table_wins_for_listed_keys(tmp_path: Path):
    table = tmp_path / "splits.csv"
    table.write_text("name,split\nsample_00000648,test\n")
    assign = SplitAssigner(RATIOS, split_table=str(table))
    assert assign({"key": "sample_00000648"}) == "test"
    assert assign({"key": "sample_00000870"}) == hash_split("sample_00000870", RATIOS)


def test_bad_split_config_is_a_user_error(tmp_path: Path):
    with pytest.raises(UserError, match="non-negative"):
        SplitAssigner({"train": -1})
    bad = tmp_path / "s.csv"
    bad.write_text("clip,part\na,train\n")
    with pytest.raises(UserError, match="needs columns key"):
        SplitAssigner(RATIOS, split_table=str(bad))
    bad.write_text("key,split\na,../../etc\n")
    with pytest.raises(UserError, match="invalid split name"):
        SplitAssigner(RATIOS, split_table=str(bad))


def test_split_tables_in_every_table_format(tmp_path: Path):
    """Read by the one table reader: a BOM and CRLF line ends (Excel's CSV), TSV, JSON lines."""
    csv_bom = tmp_path / "splits.csv"
    csv_bom.write_bytes("\ufeffname,split\r\nsample_00000648,test\r\n\r\n sample_00000870 ,validation\r\n".encode())
    tsv = tmp_path / "splits.tsv"
    tsv.write_text("key\tsplit\nsample_00000648\ttest\nsample_00000870\tvalidation\n")
    jsonl = tmp_path / "splits.jsonl"
    jsonl.write_text('{"key": "sample_00000648", "split": "test"}\n\n{"key": "sample_00000870", "split": "validation"}\n')
    for table in (csv_bom, tsv, jsonl):
        assign = SplitAssigner(RATIOS, split_table=str(table))
        assert assign.table == {"sample_00000648": "test", "sample_00000870": "validation"}
        assert assign({"key": "sample_00000870"}) == "validation"


def test_bad_split_tables_are_one_line(tmp_path: Path):
    cases = {
        "twice.csv": ("key,split\na,train\na,test\n", r"twice\.csv: line 3 puts 'a' in 'test', an earlier line in 'train'"),
        "wide.csv": ("key,split\na,train,x\n", r"wide\.csv: line 2 has 3 cells but the header has 2"),
        "bad.jsonl": ('{"key": "a", "split": "train"}\n["a", "train"]\n', r"bad\.jsonl: line 2 is not a JSON object"),
        "latin1.csv": ("key,split\ncaf\xe9,train\n".encode("latin-1"), r"latin1\.csv is not UTF-8 text"),
        "splits.txt": ("key,split\n", r"splits\.txt: cannot tell its format from the extension"),
        "empty.csv": ("", r"empty\.csv is empty"),
    }
    for name, (content, message) in cases.items():
        path = tmp_path / name
        path.write_bytes(content if isinstance(content, bytes) else content.encode())
        with pytest.raises(UserError, match=message) as e:
            SplitAssigner(RATIOS, split_table=str(path))
        assert "\n" not in str(e.value) and str(e.value).startswith("split table ")
    with pytest.raises(UserError, match=r"split table .*nope\.csv: no such file"):
        SplitAssigner(RATIOS, split_table=str(tmp_path / "nope.csv"))
