"""Emotion-wheel tables: the mappings rebuilt from the authors' files equal their pre-compiled ones; fetch, checksum and cache."""

from __future__ import annotations

import hashlib
import http.server
import json
import os
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from emer_builder.core.errors import UserError
from emer_builder.core.labels import parse_labels
from emer_builder.transforms import wheel as wheel_mod
from emer_builder.transforms.wheel import FILE_SHA256, WHEELS, EmotionWheel, load_wheel, wheel_dir

from tests.shared_data import SHARED_DATA

TABLES = SHARED_DATA / "emotion-wheel"
pytestmark = pytest.mark.skipif(not (TABLES / "format.csv").is_file(), reason=f"emotion-wheel reference tables not found at {TABLES} (set EMER_SHARED_DATA)")


@pytest.fixture(scope="module")
def wheel() -> EmotionWheel:
    return EmotionWheel(TABLES)


def test_compiled_mappings_equal_the_authors_precompiled_mapping(wheel: EmotionWheel) -> None:
    ref = json.loads((TABLES / "wheel_mapping.json").read_text())
    got = wheel.mappings()
    assert len(got["format_mapping"]) == 7356 and len(got["raw_mapping"]) == 1255
    assert got["format_mapping"] == ref["format_mapping"]  # same lists, same order, repeats included
    # the authors merge runs through set(), so only the order inside a list is arbitrary
    assert {k: sorted(v) for k, v in got["raw_mapping"].items()} == {k: sorted(v) for k, v in ref["raw_mapping"].items()}
    assert got["wheel_map_whole"] == ref["wheel_map_whole"]


def test_pinned_checksums_are_those_of_the_authors_files(wheel: EmotionWheel) -> None:
    for name, sha in FILE_SHA256.items():
        assert hashlib.sha256((TABLES / name).read_bytes()).hexdigest() == sha
    assert wheel.origin() == "MERTools@89120b7 sha256:6ab3f0971d6f"


def test_surface_form_to_base_word_to_category(wheel: EmotionWheel) -> None:
    assert wheel.format_mapping["excitedly"] == ["excited"]
    assert wheel.base_word(" Excitedly ") == "excited"
    assert wheel.category("Excitedly", "wheel1", 1) == "surprised"
    assert wheel.category("excitedly", "wheel1", 2) == "excited"
    assert wheel.category("worried", 4, 1) == "fear" and wheel.category("worried", 4, 2) == "worried"
    # "happy" is a base word and stays one; the authors' case1 alone would pick "happiness"
    assert wheel.format_mapping["happy"] == ["happiness", "happy", "happy"]
    assert wheel.normalise(["Happy", " joyful", "happy", "xyzzy", "anxiously"]) == ["happy", "joyful", "anxiety"]
    assert wheel.base_word("happy", prefer_self=False) == "happiness"
    assert wheel.normalise(["xyzzy", "Self-Deprecating"], keep_unknown=True) == ["xyzzy", "self-deprecating"]


def test_rules_drop_tie_level2_and_last_listing(wheel: EmotionWheel) -> None:
    # dropped: unknown labels, and known labels none of whose wheel words is on this wheel
    assert wheel.categories(["xyzzy", "self-deprecating"], "wheel1", 1) == set()
    assert wheel.category("surprised", "wheel5", 1) is None
    assert wheel.categories(["surprised", "furious"], "wheel5", 1) == {"mad"}
    # tie: candidates of all base words, sorted; the first on the wheel wins ("disappointed" before "frustrated")
    assert sorted(wheel.raw_mapping["frustrated"]) == ["disappointed", "frustrated", "irritated", "let down"]
    assert wheel.wheel_map_whole["wheel1"]["level1"]["frustrated"] == "mad"
    assert wheel.category("frustrated", "wheel1", 1) == "sad"
    # a level-1 word at level 2 -> its alphabetically first child
    assert wheel.wheel_map_whole["wheel1"]["level2"]["mad"] == "aggressive"
    assert wheel.wheel_map_whole["wheel1"]["level2"]["happy"] == "accepted"
    # a word listed under two level-1 words on one wheel keeps the later listing
    assert wheel.wheel_map_whole["wheel2"]["level1"]["overwhelmed"] == "bad"
    assert wheel.wheel_map_whole["wheel2"]["level1"]["embarrassed"] == "sad"


def test_wheel_categories_record_field(wheel: EmotionWheel) -> None:
    assert wheel.wheel_categories(["Happy", "xyzzy", "furious"]) == [
        {"wheel": "wheel1", "level1": ["happy", "mad"], "level2": ["anger", "joyful"]},
        {"wheel": "wheel2", "level1": ["angry", "happy"], "level2": ["aggressive", "content"]},
        {"wheel": "wheel3", "level1": ["joyful", "mad"], "level2": ["angry", "cheerful"]},
        {"wheel": "wheel4", "level1": ["anger", "joy"], "level2": ["acceptance", "aggressive"]},
        {"wheel": "wheel5", "level1": ["mad", "powerful"], "level2": ["angry", "proud"]},
    ]
    assert [w["wheel"] for w in wheel.wheel_categories([])] == list(WHEELS)
    with pytest.raises(ValueError):
        wheel.categories(["happy"], "wheel6", 1)


def test_authors_string_to_list() -> None:
    """The tables are read with the one label parser in its `authors` mode: MERTools' `string_to_list`."""
    assert parse_labels("abandoned,abandon,abandons", "authors") == ["abandoned", "abandon", "abandons"]
    assert parse_labels("['excited', 'joyful']", "authors") == ["excited", "joyful"]
    assert parse_labels("uncovered, revealed", "authors") == ["uncovered", "revealed"]
    assert parse_labels(None, "authors") == [] and parse_labels("", "authors") == []
    assert wheel_mod._labels(wheel_mod._cell("NaN")) == [] and wheel_mod._labels(wheel_mod._cell("N/A")) == []  # pandas reads these as missing


def test_damaged_table_is_one_line(tmp_path: Path) -> None:
    for name in FILE_SHA256:
        shutil.copyfile(TABLES / name, tmp_path / name)
    (tmp_path / "wheel2.xlsx").write_bytes(b"PK\x03\x04 not really a workbook")
    with pytest.raises(UserError, match=r"^emotion-wheel table .*wheel2\.xlsx: cannot read it as \.xlsx \(") as e:
        EmotionWheel(tmp_path)
    assert "\n" not in str(e.value)
    (tmp_path / "wheel2.xlsx").unlink()
    shutil.copyfile(TABLES / "wheel2.xlsx", tmp_path / "wheel2.xlsx")
    (tmp_path / "format.csv").write_bytes("\ufeffname,format\r\nhappy,\"['glad', 'joyful']\"\r\n".encode())  # BOM and CRLF
    small = EmotionWheel(tmp_path)
    assert small.format_mapping == {"glad": ["happy"], "joyful": ["happy"], "happy": ["happy"]}


def test_given_folder_missing_a_file(tmp_path: Path) -> None:
    for name in FILE_SHA256:
        if name != "wheel3.xlsx":
            shutil.copyfile(TABLES / name, tmp_path / name)
    with pytest.raises(UserError, match=r"missing wheel3\.xlsx"):
        wheel_dir(str(tmp_path))
    with pytest.raises(UserError, match="not a folder"):
        wheel_dir(str(tmp_path / "nope"))
    assert wheel_dir(str(TABLES)) == TABLES
    assert load_wheel(str(TABLES)) is load_wheel(str(TABLES))  # built once per folder


@pytest.fixture()
def server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A local HTTP server for a copy of the tables, the download URL pointed at it, EMER_HOME in tmp."""
    served = tmp_path / "served"
    served.mkdir()
    for name in FILE_SHA256:
        shutil.copyfile(TABLES / name, served / name)

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, directory=str(served), **kwargs)

        def log_message(self, *args) -> None:
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Quiet)
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    monkeypatch.setattr(wheel_mod, "BASE_URL", f"http://127.0.0.1:{httpd.server_address[1]}/")
    monkeypatch.setattr(wheel_mod, "DOWNLOAD_TIMEOUT_S", 5.0)
    monkeypatch.setenv("EMER_HOME", str(tmp_path / "home"))
    for proxy in ("http_proxy", "HTTP_PROXY", "all_proxy", "ALL_PROXY"):  # 127.0.0.1 must be reached directly
        monkeypatch.delenv(proxy, raising=False)
    try:
        yield served
    finally:
        httpd.shutdown()
        httpd.server_close()


def _cache() -> Path:
    return Path(os.environ["EMER_HOME"]) / "emotion-wheel" / wheel_mod.UPSTREAM_COMMIT


def test_download_checks_and_caches(server: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = wheel_dir(None)
    assert folder == _cache()
    assert sorted(p.name for p in folder.iterdir()) == sorted(FILE_SHA256)  # no partial files left
    assert EmotionWheel(folder).origin() == "MERTools@89120b7 sha256:6ab3f0971d6f"
    # second use is served from the cache: the network is not needed
    url = wheel_mod.BASE_URL
    monkeypatch.setattr(wheel_mod, "BASE_URL", "http://127.0.0.1:9/")
    assert wheel_dir(None) == folder
    # a damaged cached file is fetched again: offline that fails, online it is repaired
    (folder / "wheel2.xlsx").write_bytes(b"damaged")
    with pytest.raises(UserError, match=r"could not download the emotion-wheel table wheel2\.xlsx .*; pass --wheel-dir"):
        wheel_dir(None)
    monkeypatch.setattr(wheel_mod, "BASE_URL", url)
    assert wheel_dir(None) == folder
    assert hashlib.sha256((folder / "wheel2.xlsx").read_bytes()).hexdigest() == FILE_SHA256["wheel2.xlsx"]


def test_download_bad_checksum_is_a_user_error(server: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(wheel_mod.FILE_SHA256, "wheel3.xlsx", "0" * 64)
    with pytest.raises(UserError, match=r"wheel3\.xlsx .* has sha256 d62f30bf88c1, expected 000000000000; pass --wheel-dir") as e:
        wheel_dir(None)
    assert "\n" not in str(e.value)
    assert not (_cache() / "wheel3.xlsx").exists()
    assert not [p for p in _cache().iterdir() if p.name.endswith(".partial")]


def test_download_missing_file_is_a_user_error(server: Path) -> None:
    (server / "synonym.xlsx").unlink()
    with pytest.raises(UserError, match=r"could not download the emotion-wheel table synonym\.xlsx .*404.*--wheel-dir"):
        wheel_dir(None)
    assert (_cache() / "format.csv").is_file() and not (_cache() / "synonym.xlsx").exists()
