"""`emer build --annotations`: tables joined by clip name, each field from its first source that has it,
labels normalised with the emotion-wheel tables, unmatched names reported, conflicts refused."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from emer_builder.cli.main import main

from tests.shared_data import SHARED_DATA

DEMO_TABLES = Path(__file__).resolve().parents[1] / "bench" / "demo_annotations"
WHEEL = SHARED_DATA / "emotion-wheel"
CLIPS = ("sample_00000870.mp4", "jesper_intro.avi", "no_face_dog.mp4")


@pytest.fixture(scope="module")
def three_clips(demo_videos: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("three") / "videos"
    folder.mkdir()
    for name in CLIPS:
        shutil.copyfile(demo_videos / name, folder / name)
    return folder


@pytest.fixture(scope="module")
def annotated(three_clips: Path, tmp_path_factory: pytest.TempPathFactory):
    if not WHEEL.is_dir():
        pytest.skip(f"emotion-wheel tables not found at {WHEEL} (set EMER_SHARED_DATA)")
    out = tmp_path_factory.mktemp("annotated") / "out"
    tables = [a for t in sorted(DEMO_TABLES.glob("*.csv")) for a in ("--annotations", str(t))]
    import io
    from contextlib import redirect_stdout

    printed = io.StringIO()
    with redirect_stdout(printed):
        assert main(["build", str(three_clips), "--out", str(out), "--quiet", "--workers", "1", "--wheel-dir", str(WHEEL), *tables]) == 0
    rows = {}
    for path in sorted((out / "data").glob("*.parquet")):
        rows.update({r["key"]: r for r in pq.read_table(path).to_pylist()})
    return out, rows, printed.getvalue()


def test_annotated_fields_win_and_rules_fill_the_rest(annotated):
    _, rows, _ = annotated
    e = rows["sample_00000870"]["explanation"]
    assert e["visual_clue"]["text"].startswith("In the video, a young man with spiky short hair faces the camera.")
    assert e["visual_clue"]["source"] == "human" and e["visual_clue"]["language"] == "en"
    (zh,) = e["visual_clue"]["translations"]  # EMER-Fine is bilingual: the Chinese clue is kept beside the English one
    assert zh["language"] == "zh" and zh["text"].startswith("在视频中，画面中是一位留着竖起短发的年轻男性") and e["acoustic_clue"]["translations"][0]["language"] == "zh"
    assert rows["no_face_dog"]["explanation"]["visual_clue"]["translations"] == []  # rules: one language
    assert e["acoustic_clue"]["text"].startswith("In the audio, the speaker talks at a steady pace")
    assert e["lexical_clue"]["text"].startswith('In the text, the subtitle says: "And Mr. John Dashwood')
    assert e["multimodal_explanation"]["text"].endswith("we infer that the speaker feels happy and relaxed.")
    assert e["open_vocab_labels"]["labels"] == ["happy", "relaxed"] and e["open_vocab_labels"]["normalised"] == ["happy", "relaxed"]
    assert e["open_vocab_labels"]["wheel"][0] == {"wheel": "wheel1", "level1": ["happy"], "level2": ["joyful"]}
    assert e["discrete_label"]["label"] == "happy" and e["valence"]["value"] == 2.5
    assert e["evidence"] == []  # nothing came from the rules

    jesper = rows["jesper_intro"]["explanation"]
    assert jesper["subtitle"]["text"] == "Hi, my name is Jesper and I pronounce it Jesper." and jesper["subtitle"]["source"] == "human"
    assert jesper["multimodal_explanation"]["source"] == "human" and jesper["discrete_label"]["label"] == "neutral"
    assert jesper["visual_clue"]["source"] == "rules:1"  # EMER-V1 has no clues: the rules give them
    assert jesper["lexical_clue"]["text"].startswith('In the text, the speaker says: "Hi, my name is Jesper and I pronounce it Jesper."')  # the subtitle, not Whisper
    assert jesper["open_vocab_labels"]["labels"] == ["friendly", "calm"] and jesper["open_vocab_labels"]["normalised"] == ["calm"]
    assert jesper["valence"]["value"] is None and jesper["valence"]["reason"].startswith("annotations: annotations have no valence for jesper_intro")

    dog = rows["no_face_dog"]["explanation"]
    assert {dog[f]["source"] for f in ("visual_clue", "acoustic_clue", "lexical_clue", "multimodal_explanation", "open_vocab_labels")} == {"rules:1"}
    assert dog["discrete_label"]["reason"].startswith("annotations: no annotation for no_face_dog")


def test_unmatched_names_and_sources_are_reported(annotated):
    out, rows, printed = annotated
    manifest = json.loads((out / "manifest.json").read_text())
    ann = manifest["annotations"]
    assert ann["videos_without_annotation"] == ["no_face_dog"]
    assert ann["names_without_video"] == ["sample_00000880", "sample_00000890", "sample_00000920", "sample_00000930", "sample_00009999"]
    assert [Path(f["path"]).name for f in ann["files"]] == ["emer-fine.csv", "emer-v1.csv", "mer2023-labels.csv", "openset.csv"]
    assert manifest["stats"]["explanation_sources"]["visual_clue"] == {"human": 1, "rules:1": 2}
    assert manifest["stats"]["explanation_sources"]["valence"] == {"human": 1, "null": 2}
    assert manifest["emotion_wheel"].startswith("MERTools@89120b7 sha256:")
    assert rows["no_face_dog"]["provenance"]["emotion_wheel"] == manifest["emotion_wheel"]
    assert "annotations: 4 tables; 5 names without a video (sample_00000880, sample_00000890, sample_00000920 ...); 1 videos without an annotation (no_face_dog)" in printed
    assert "explanation: visual_clue human 1/rules:1 2;" in printed


def test_conflicting_tables_are_one_error_naming_both(three_clips, tmp_path, capsys):
    other = tmp_path / "labels-b.csv"
    other.write_text("name,discrete,valence\nsample_00000870,sad,-2\n")
    code = main(["build", str(three_clips), "--out", str(tmp_path / "out"), "--annotations", str(DEMO_TABLES / "mer2023-labels.csv"), "--annotations", str(other)])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1
    assert "mer2023-labels.csv" in err and "labels-b.csv" in err and "sample_00000870" in err
    assert not (tmp_path / "out").exists()


LLM_KEY = "sk-build-loopback-7f3Kq-do-not-print"


@pytest.mark.slow
def test_llm_explainer_end_to_end_in_a_build(three_clips, tmp_path, monkeypatch, capsys):
    """Every clue, the explanation and the labels from an OpenAI-compatible endpoint (a loopback server
    driven by the real openai client) in a 2-worker build; a re-run is answered from the cache."""
    from tests.openai_loopback import LABELS, OpenAILoopback

    monkeypatch.setenv("EMER_TEST_LLM_KEY", LLM_KEY)
    with OpenAILoopback(LLM_KEY) as server:
        config = tmp_path / "llm.yaml"
        config.write_text(
            "explanation:\n"
            "  default_sources: [annotations, llm, rules]\n"
            "  llm:\n"
            f"    base_url: {server.base_url}\n"
            "    model: loopback-chat\n"
            "    vision_model: loopback-vision\n"
            "    api_key_env: EMER_TEST_LLM_KEY\n"
            f"    cache_dir: {tmp_path / 'cache'}\n"
            "    timeout_s: 10\n"
            "    concurrency: 2\n"
        )
        args = ["build", str(three_clips), "--config", str(config), "--quiet", "--annotations", str(DEMO_TABLES / "emer-v1.csv")]
        assert main([*args, "--out", str(tmp_path / "a")]) == 0
        first = capsys.readouterr().out
        asked = len(server.chat_requests())
        assert main([*args, "--out", str(tmp_path / "b")]) == 0
        second = capsys.readouterr().out
        assert len(server.chat_requests()) == asked  # the re-run made no request
        vision = server.chat_requests("visual_clue")
    # 3 clips x 5 fields, less jesper's annotated explanation (its labels still come from the llm); the
    # server's answers repeat, so an identical label request is answered from the cache
    assert asked in (13, 14) and len(vision) == 3
    assert f"llm: {asked} requests, {14 - asked} answers from the cache, 0 fields left null after retries" in first
    assert "llm: 0 requests, 14 answers from the cache" in second
    images = [p for r in vision for p in r.user_parts() if p["type"] == "image_url"]
    assert len(images) == 9 and all(p["image_url"]["url"].startswith("data:image/jpeg;base64,") for p in images)  # 3 keyframes per clip
    rows = {}
    for path in sorted((tmp_path / "a" / "data").glob("*.parquet")):
        rows.update({r["key"]: r for r in pq.read_table(path).to_pylist()})
    for row in rows.values():
        e = row["explanation"]
        assert e["visual_clue"]["source"] == "llm:loopback-vision" and e["visual_clue"]["prompt_version"] == "emer-v2" and e["visual_clue"]["time"]
        assert e["acoustic_clue"]["source"] == "llm:loopback-chat:text" and e["lexical_clue"]["source"] == "llm:loopback-chat"
        assert e["open_vocab_labels"]["labels"] == LABELS
    assert rows["jesper_intro"]["explanation"]["multimodal_explanation"]["source"] == "human"
    for a, b in zip(sorted((tmp_path / "a" / "data").glob("*.parquet")), sorted((tmp_path / "b" / "data").glob("*.parquet")), strict=True):
        assert a.read_bytes() == b.read_bytes()  # cached answers keep their time: identical bytes
    everything = first + second + "".join(p.read_text() for p in (tmp_path / "cache").rglob("*.json")) + (tmp_path / "a" / "manifest.json").read_text()
    assert LLM_KEY not in everything and "EMER_TEST_LLM_KEY" in (tmp_path / "a" / "manifest.json").read_text()


ASKED = ("visual_clue", "acoustic_clue", "lexical_clue", "multimodal_explanation", "open_vocab_labels")


def _shards(out: Path) -> dict[str, bytes]:
    return {p.relative_to(out).as_posix(): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file() and p.suffix in (".parquet", ".tar")}


@pytest.mark.slow
@pytest.mark.timeout(2400)  # 35 prompts of 300-950 tokens on 2 CPU cores: 5 minutes alone, 15 and more beside other test runs
def test_every_field_from_a_real_text_only_model(demo_videos, llama_server, tmp_path, capsys):
    """`emer build` on the demo corpus with every field from `llm`, against llama.cpp serving SmolLM2-135M (text only):
    every field is the model's or null with its reason, the clues come from the measurements as text, labels are
    parsed lists; a re-run makes no request (the server generates nothing) and writes byte-identical shards."""
    caps = {"visual_clue": 64, "acoustic_clue": 64, "lexical_clue": 64, "multimodal_explanation": 64, "open_vocab_labels": 64}  # short answers: the prompts dominate
    config = tmp_path / "llm.yaml"
    config.write_text(
        "explanation:\n"
        "  default_sources: [llm]\n"
        "  llm:\n"
        f"    base_url: {llama_server.base_url}\n"
        "    model: smollm2\n"
        f"    cache_dir: {tmp_path / 'cache'}\n"
        "    timeout_s: 300\n"
        "    concurrency: 2\n"
        f"    max_tokens: {json.dumps(caps)}\n"
    )
    args = ["build", str(demo_videos), "--config", str(config), "--quiet"]
    assert main([*args, "--out", str(tmp_path / "a")]) == 0
    first = capsys.readouterr().out
    generated = llama_server.metrics()["tokens_predicted_total"]
    from emer_builder.core.config import load_config
    from emer_builder.pipelines.build import build

    rerun = build(demo_videos, tmp_path / "b", load_config(config), show_progress=False)  # the same build through the Python API
    assert llama_server.metrics()["tokens_predicted_total"] == generated  # the re-run asked nothing

    counted = re.search(r"llm: (\d+) requests, 0 answers from the cache, (\d+) fields left null", first)
    asked, null = int(counted.group(1)), int(counted.group(2))
    counts = {k: rerun.llm.get(k, 0) for k in ("calls", "cache_hits", "failures", "text_fallbacks")}  # the summary keeps counters that moved
    assert counts == {"calls": 0, "cache_hits": asked, "failures": null, "text_fallbacks": counts["text_fallbacks"]}  # unusable answers are kept too
    rows = {}
    for path in sorted((tmp_path / "a" / "data").glob("*.parquet")):
        rows.update({r["key"]: r for r in pq.read_table(path).to_pylist()})
    assert len(rows) == 7
    given = {name: 0 for name in ASKED}
    for key, row in rows.items():
        e = row["explanation"]
        for name in ("subtitle", "discrete_label", "valence"):
            assert e[name]["source"] is None and e[name]["reason"] == f"llm: llm does not provide {name}"
        for name in ASKED:
            f = e[name]
            if f["source"] is None:  # null with the model's or the inputs' reason
                assert f["reason"].startswith("llm: ") and len(f["reason"]) > 5, (key, name, f)
                continue
            given[name] += 1
            suffix = ":text" if name in ("visual_clue", "acoustic_clue") else ""  # the face and the voice from measurements
            assert (f["source"], f["prompt_version"], f["reason"]) == (f"llm:smollm2{suffix}", "emer-v2", None) and f["time"]
            if name == "open_vocab_labels":
                assert isinstance(f["labels"], list) and all(isinstance(x, str) and x for x in f["labels"])
            else:
                assert isinstance(f["text"], str) and f["text"].strip()
    assert asked == sum(given.values()) + null  # one request per field: nothing retried, no image request sent
    reads = {k.removeprefix("read_"): v for k, v in rerun.llm.items() if k.startswith("read_")}  # how each answer was read, counted
    assert sum(reads.values()) == sum(given.values()) and reads.get("schema", 0) + reads.get("tolerant", 0) == given["open_vocab_labels"]
    assert counts["text_fallbacks"] == given["visual_clue"]  # the model takes no images: every visual clue from measurements
    assert given["visual_clue"] == given["multimodal_explanation"] == 7  # every clip was measured, with or without a face
    assert given["open_vocab_labels"] >= 5
    assert _shards(tmp_path / "a") == _shards(tmp_path / "b") and _shards(tmp_path / "a")  # cached answers keep their time: identical bytes


def test_unreachable_llm_endpoint_is_one_error(three_clips, tmp_path, capsys):
    config = tmp_path / "llm.yaml"
    config.write_text("explanation:\n  sources: {visual_clue: [llm]}\n  llm: {base_url: 'http://127.0.0.1:9/v1', model: m, timeout_s: 2, max_retries: 0}\n")
    assert main(["build", str(three_clips), "--out", str(tmp_path / "out"), "--config", str(config)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("emer: error: the llm endpoint http://127.0.0.1:9/v1 cannot be used") and err.count("\n") == 1


def test_emer_evaluate_reads_a_build(annotated, capsys):
    """The build's labels against the demo's human labels: the two annotated clips match exactly, the
    five annotated names without a video in this build score as empty predictions."""
    out, _, _ = annotated
    assert main(["evaluate", "--gt", str(DEMO_TABLES / "openset.csv"), "--pred", str(out), "--wheel-dir", str(WHEEL), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["counts"] == {"gt": 7, "pred": 3, "missing_predictions": 5, "extra_predictions": 1}
    for level in ("level1", "level2"):
        wheels = result["emotion_wheel"][level]["wheels"]
        for w in wheels.values():
            assert w["evaluated"] + w["skipped"] == 7
            assert w["p"] == pytest.approx(2 / w["evaluated"]) and w["r"] == pytest.approx(2 / w["evaluated"])
        assert result["emotion_wheel"][level]["p"] == pytest.approx(sum(w["p"] for w in wheels.values()) / 5)
    assert main(["evaluate", "--gt", str(DEMO_TABLES / "openset.csv"), "--pred", str(out), "--wheel-dir", str(WHEEL)]) == 0
    table = capsys.readouterr().out
    assert "level1 mean" in table and "missing predictions 5 (scored as empty)" in table


def test_configuration_mistakes_are_one_clear_error(tmp_path):
    from emer_builder.core.config import config_from_dict
    from emer_builder.core.errors import UserError
    from emer_builder.pipelines.explain_setup import prepare

    cases = {
        "explanation.sources.visual_clue must be a list of source names": {"sources": {"visual_clue": "llm"}},
        "explanation source(s) gpt for valence unknown": {"sources": {"valence": ["gpt"]}},
        "names unknown field(s) mood": {"sources": {"mood": ["rules"]}},
        "needs explanation.llm.base_url and explanation.llm.model": {"default_sources": ["llm"]},
        "must not hold credentials": {"default_sources": ["llm"], "llm": {"base_url": "https://user:sk-secret@example.org/v1", "model": "m"}},
        "concurrency must be at least 1": {"default_sources": ["llm"], "llm": {"base_url": "http://127.0.0.1:9/v1", "model": "m", "concurrency": 0}},
        "prompt_version must be a folder name": {"default_sources": ["llm"], "llm": {"base_url": "http://127.0.0.1:9/v1", "model": "m", "prompt_version": "../x"}},
        "entries must be mappings": {"mapped_annotations": ["labels.csv"]},
    }
    for message, explanation in cases.items():
        with pytest.raises(UserError, match=re.escape(message)) as caught:
            prepare(config_from_dict({"explanation": explanation}), check_endpoint=False)
        assert "sk-secret" not in str(caught.value)


def test_one_annotated_name_for_two_videos_is_refused_unless_named_by_path():
    from emer_builder.core.errors import UserError
    from emer_builder.pipelines.explain_setup import join_names
    from emer_builder.transforms.keys import VideoInput

    inputs = [VideoInput("video_0001__0001", "/v/video_0001/0001.mp4", "video_0001/0001.mp4"), VideoInput("video_0002__0001", "/v/video_0002/0001.mp4", "video_0002/0001.mp4")]
    with pytest.raises(UserError, match=r"annotated name '0001' matches 2 videos .*'video_0001/0001'"):
        join_names(inputs, {"0001"})
    assert join_names(inputs, {"video_0001/0001", "video_0002/0001"}) == {"video_0001__0001": "video_0001/0001", "video_0002__0001": "video_0002/0001"}
    assert join_names(inputs, set()) == {"video_0001__0001": "0001", "video_0002__0001": "0001"}  # nothing annotated: nothing to mix up
