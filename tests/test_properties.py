"""Properties of the pure parts, over inputs no one would write by hand (Hypothesis).

- keys: from any file names (any bytes but `/` and NUL), matching accounts for every file once; keys
  are unique, safe and stable (a file's key does not depend on the other files); the display form
  of a name is valid UTF-8 and one-to-one (it can be read back to the name's bytes).
- splits: a record's split does not change when other inputs are added or removed, and a group
  never straddles two splits.
- annotation and split tables: any text gives rows or one clear UserError, never a traceback.
- the explanation's grouping: the statistics a batch is sent answer as the whole corpus' (NaN, signed
  zeros, absent measures), and each clip finds its annotation row in its own batch.
"""

from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path

from emer_builder.core.errors import UserError
from emer_builder.pipelines.explain import batch_of, rows_by_batch
from emer_builder.transforms.annotations import detect_language, load_annotations, split_chinese_clues, split_english_clues
from emer_builder.transforms.keys import MAX_KEY_BYTES, VIDEO_EXTENSIONS, display_path, key_for, match_videos
from emer_builder.transforms.rules_explainer import CORPUS_MEASURES, CorpusStats
from emer_builder.transforms.split import SplitAssigner, load_split_table
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

SAFE_KEY = re.compile(r"[\w-]+")
FAST = settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
CHEAP = settings(max_examples=300, deadline=None)

# A file-name component: any bytes but `/` and NUL, not hidden (hidden entries are not inputs), at most 40 bytes.
component = st.binary(min_size=1, max_size=40).filter(lambda b: b"/" not in b and b"\x00" not in b and not b.startswith(b"."))
suffix = st.sampled_from([b".mp4", b".MKV", b".avi", b".webm", b".txt", b""])
entry = st.tuples(st.one_of(st.none(), component), component, suffix)  # (folder or None, stem, suffix)
# Names whose keys collide: spaces, dots and `_` alike; é composed, decomposed and as a Latin-1 byte vs `xe9`.
colliding = st.tuples(st.none(), st.sampled_from([b"a b", b"a_b", b"a.b", b"\xc3\xa9", b"e\xcc\x81", b"\xe9", b"_xe9"]), st.sampled_from([b".mp4", b".mkv"]))
entries = st.one_of(st.lists(entry, min_size=1, max_size=8), st.lists(st.one_of(colliding, entry), min_size=2, max_size=8))


def undisplay(shown: str) -> bytes:
    """The inverse of display_path: the name's bytes back from its display form."""
    out, i = bytearray(), 0
    while i < len(shown):
        ch = shown[i]
        if ch != "\\":
            out += ch.encode()
            i += 1
        elif shown[i + 1] == "\\":
            out += b"\\"
            i += 2
        elif shown[i + 1] == "x":
            code = int(shown[i + 2 : i + 4], 16)
            out += bytes([code]) if code >= 0x80 else chr(code).encode()  # 80-ff: a byte that is not UTF-8
            i += 4
        else:  # \uNNNN
            out += chr(int(shown[i + 2 : i + 6], 16)).encode()
            i += 6
    return bytes(out)


@CHEAP
@given(raw=st.binary(max_size=60))
def test_display_form_is_utf8_and_one_to_one(raw: bytes):
    shown = display_path(raw)
    shown.encode("utf-8")  # never raises: Parquet and JSON take it
    assert "\n" not in shown and "\r" not in shown and "\u202e" not in shown
    assert undisplay(shown) == raw


def test_c1_controls_and_raw_bytes_do_not_share_a_display_form():
    # U+0085 (NEL, a valid UTF-8 character) and the raw byte 0x85 (not UTF-8) must display differently
    assert display_path("a\u0085") != display_path(b"a\x85")


@CHEAP
@given(raw=st.binary(min_size=1, max_size=300))
def test_keys_are_safe_and_stable(raw: bytes):
    key = key_for(raw)
    assert SAFE_KEY.fullmatch(key), key
    assert "." not in key and "/" not in key and len(key.encode()) <= MAX_KEY_BYTES
    assert key == key_for(raw) == key_for(os.fsdecode(raw))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
@given(entries=entries)
def test_matching_accounts_for_every_file_with_unique_safe_stable_keys(entries: list[tuple[bytes | None, bytes, bytes]]):
    with tempfile.TemporaryDirectory() as tmp:
        root = os.fsencode(tmp)
        made: set[bytes] = set()
        for folder, stem, ext in entries:
            rel = (folder + b"/" if folder else b"") + stem + ext
            if folder and folder + ext in made or rel in made or any(m.startswith(rel + b"/") for m in made):
                continue  # a name already used as a file or a folder
            if folder:
                if os.path.isfile(os.path.join(root, folder)):
                    continue
                os.makedirs(os.path.join(root, folder), exist_ok=True)
            if os.path.isdir(os.path.join(root, rel)):
                continue
            with open(os.path.join(root, rel), "wb") as f:
                f.write(b"x")
            made.add(rel)
        videos = {r for r in made if os.path.splitext(os.fsdecode(r))[1].lower() in VIDEO_EXTENSIONS}
        inputs, collisions, skipped = match_videos(tmp)
        found = [i.source_path for i in inputs] + [c.source_path for c in collisions]
        assert sorted(found) == sorted(display_path(r) for r in videos)  # each video once, none lost
        assert sorted(skipped) == sorted(display_path(r) for r in made - videos)
        keys = [i.key for i in inputs]
        assert len(keys) == len(set(keys)) and not {c.key for c in collisions} & set(keys)
        for i in inputs:
            raw = os.path.relpath(os.fsencode(i.path), root)
            assert SAFE_KEY.fullmatch(i.key) and i.key == key_for(raw)  # the key depends on the name only
            assert display_path(raw) == i.source_path and os.path.isfile(i.path)
        event("key collision" if collisions else "no collision")
        for c in collisions:
            assert c.others and all(key_for(undisplay(o)) == c.key for o in c.others)


records = st.lists(st.text(alphabet="abcdefgh0123456789_", min_size=1, max_size=12), min_size=1, max_size=40, unique=True)
ratios = st.sampled_from([{"train": 0.8, "validation": 0.1, "test": 0.1}, {"train": 0.5, "test": 0.5}, {"train": 1.0}, {"train": 0.7, "dev": 0.2, "test": 0.1}])


@FAST
@given(corpus=records, added=records, ratios=ratios, seed=st.text(max_size=8))
def test_split_is_stable_when_inputs_come_and_go(corpus: list[str], added: list[str], ratios: dict[str, float], seed: str):
    def splits(keys: list[str]) -> dict[str, str]:
        assign = SplitAssigner(ratios, seed=seed)
        return {k: assign({"key": k}) for k in keys}

    before = splits(corpus)
    grown = splits(sorted(set(corpus) | set(added)))
    shrunk = splits(corpus[: len(corpus) // 2])
    assert all(grown[k] == s for k, s in before.items())
    assert all(before[k] == s for k, s in shrunk.items())
    assert set(before.values()) <= set(ratios)


@FAST
@given(corpus=records, ratios=ratios)
def test_a_group_never_straddles_two_splits(corpus: list[str], ratios: dict[str, float]):
    assign = SplitAssigner(ratios, group_by="source_path", group_pattern=r"^([^/]+)/")
    by_group: dict[str, set[str]] = {}
    for key in corpus:
        group = key[:2]  # records of one source video share a folder
        by_group.setdefault(group, set()).add(assign({"key": key, "source_path": f"{group}/{key}.mp4"}))
    assert all(len(s) == 1 for s in by_group.values())


HEADERS = ["", "names,emotions,subtitles,reasons", "name,chinese,english", "name,openset", "name,discrete,valence", "key,split", "name,split"]
cell = st.one_of(st.text(max_size=20), st.sampled_from(["", '"', '""', "[", "['a', 'b']", '["x"]', "1e999", "nan", "在视频中，在音频中；", "In the video, x."]))
table_text = st.one_of(
    st.text(max_size=300),
    st.tuples(st.sampled_from(HEADERS), st.lists(st.lists(cell, max_size=5), max_size=5), st.sampled_from([",", "\t"])).map(
        lambda t: "\n".join([t[0].replace(",", t[2]), *(t[2].join(row) for row in t[1])])
    ),
    st.lists(
        st.dictionaries(
            st.sampled_from(["name", "openset", "discrete", "valence", "chinese", "english"]),
            st.one_of(cell, st.integers(), st.none(), st.lists(cell, max_size=3)),
        ),
        max_size=4,
    ).map(lambda rows: "\n".join(__import__("json").dumps(r) for r in rows)),
)


def _one_clear_error(e: UserError, path: Path) -> None:
    message = str(e)
    assert message and "Traceback" not in message, message
    assert str(path) in message or path.name in message, message  # it names the table


@FAST
@given(text=table_text, ext=st.sampled_from([".csv", ".tsv", ".jsonl"]), raw=st.booleans())
def test_annotation_tables_give_rows_or_one_clear_error(text: str, ext: str, raw: bool):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"table{ext}"
        path.write_bytes(text.encode("utf-8", "surrogatepass") if not raw else text.encode("utf-8", "surrogatepass") + b"\xff\xfe")
        for load in (
            lambda: load_annotations([path]),
            lambda: load_annotations([], [{"path": str(path), "columns": {"name": "name", "subtitle": "chinese"}}]),
            lambda: load_split_table(path),
        ):
            try:
                result = load()
            except UserError as e:
                _one_clear_error(e, path)
            else:
                assert result is not None


@CHEAP
@given(text=st.text(max_size=400))
def test_explanation_text_parsers_never_crash(text: str):
    assert detect_language([text]) in ("zh", "en")
    for parse in (split_chinese_clues, split_english_clues):
        clues = parse(text)
        assert clues is None or (isinstance(clues, dict) and all(isinstance(v, str) for v in clues.values()))


MEASURES = list(CORPUS_MEASURES)
measure = st.one_of(st.none(), st.just(float("nan")), st.just(0.0), st.just(-0.0), st.sampled_from([2.0, -1.5, 1e300, float("inf"), float("-inf")]), st.floats(-5, 5))


@CHEAP
@given(st.lists(st.tuples(*[measure] * len(MEASURES)), max_size=30), st.data())
def test_a_batch_is_placed_as_the_whole_corpus(rows, data):
    """The corpus statistics a batch of clips is sent answer every question about its clips' values as
    the whole corpus' statistics do, in any order of the clips; from rows as from dicts."""
    dicts = [{n: v for n, v in zip(MEASURES, r, strict=True) if v is not None} for r in rows]
    whole = CorpusStats.from_measures(dicts)
    assert CorpusStats.from_rows(rows) == whole
    shuffled = data.draw(st.permutations(rows))
    picked = data.draw(st.lists(st.sampled_from(range(len(rows))), unique=True) if rows else st.just([]))
    placed = CorpusStats.from_rows(shuffled).placed([rows[i] for i in picked])
    for name in MEASURES:
        assert placed.clips(name) == whole.clips(name)
    for i in picked:
        for name, value in dicts[i].items():
            assert placed.percentile(name, value) == whole.percentile(name, value) == placed.percentile(name, -value if value == 0 else value)


@CHEAP
@given(
    st.lists(st.text(min_size=1, max_size=4), max_size=40),
    st.dictionaries(st.text(min_size=1, max_size=4), st.text(min_size=1, max_size=4), max_size=20),
    st.sets(st.text(min_size=1, max_size=4), max_size=20),
    st.integers(1, 9),
)
def test_each_clip_finds_its_annotation_row_in_its_batch(keys, names, annotated, batches):
    """The rows the driver sends each batch: every clip's row (by the name its adapter gives, else its
    key) once in the clip's batch, and no row that no clip of the batch names."""
    rows = {n: {"label": {None: n}} for n in annotated}
    sent = rows_by_batch(keys, names, rows, batches)
    assert len(set((b, n) for b, (n, _) in sent)) == len(sent)
    assert {(b, n) for b, (n, _) in sent} == {(batch_of(k, batches), names.get(k, k)) for k in keys if names.get(k, k) in rows}
    assert all(values == rows[n] for _, (n, values) in sent)
