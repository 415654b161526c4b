from pathlib import Path

import pytest
from emer_builder.core.config import BuildConfig, load_config
from emer_builder.core.errors import UserError
from emer_builder.pipelines.progress import Progress, ProgressLog, add_up, model_load, split_stats, stage_time, tally
from emer_builder.pipelines.staging import StagingArea
from emer_builder.transforms.stages.models import WHISPER_BASE_BYTES, install_offline_models, resolve_whisper, whisper_base_dir


def test_config_file_maps_onto_the_dataclasses(tmp_path: Path):
    path = tmp_path / "build.yaml"
    path.write_text("transcript:\n  model: tiny.en\n  language: en\nfaces:\n  crop_size: 112\nsplit:\n  ratios: {train: 0.9, test: 0.1}\n")
    config = load_config(path)
    assert config.transcript.model == "tiny.en" and config.transcript.language == "en"
    assert config.faces.crop_size == 112 and config.faces.detector == "yunet"
    assert config.split.ratios == {"train": 0.9, "test": 0.1}
    assert config.config_hash() != BuildConfig().config_hash()
    reordered = tmp_path / "reordered.yaml"
    reordered.write_text("split:\n  ratios: {test: 0.1, validation: 0.1, train: 0.8}\n")
    assert load_config(reordered).config_hash() == BuildConfig().config_hash()  # same splits, same hash


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("faces:\n  size: 1\n", "unknown config key(s) faces.size"),
        ("- a\n", "must hold a mapping"),
        ("faces: [1\n", "not valid YAML"),
        ("faces: 3\n", "config section faces must be a mapping"),
        ("decode:\n  sample_fps: fast\n", "decode.sample_fps must be of type float"),
        ("faces:\n  crop_size: true\n", "faces.crop_size must be of type int"),
        ("split:\n  ratios: [0.8, 0.2]\n", "split.ratios must be of type dict"),
        ("extra_stages: pkg.mod:Stage\n", "extra_stages must be a list of strings"),
    ],
)
def test_bad_config_files_are_user_errors(tmp_path: Path, text: str, message: str):
    path = tmp_path / "build.yaml"
    path.write_text(text)
    with pytest.raises(UserError, match=message.replace("(", r"\(").replace(")", r"\)")):
        load_config(path)
    with pytest.raises(UserError, match="config file not found"):
        load_config(tmp_path / "missing.yaml")


def test_offline_models_are_rebuilt_once_and_resolved():
    found = install_offline_models()
    base = whisper_base_dir()
    assert (base / "model.bin").stat().st_size == WHISPER_BASE_BYTES
    assert found["whisper base"] == str(base) == resolve_whisper("base")
    assert Path(resolve_whisper("tiny.en"), "model.bin").is_file()
    assert resolve_whisper("large-v3") == "large-v3"  # unknown names go to faster-whisper (downloads online)
    before = (base / "model.bin").stat().st_mtime_ns
    install_offline_models()
    assert (base / "model.bin").stat().st_mtime_ns == before  # idempotent: nothing rebuilt


def test_progress_counts_marks_from_every_worker(tmp_path: Path, monkeypatch):
    # a machine that booted 12 s ago: the monotonic clock counts from boot
    monkeypatch.setattr("emer_builder.pipelines.progress.time.monotonic", lambda: 12.0)
    area = StagingArea(tmp_path)
    log = ProgressLog(area, every_s=3600)
    for status in ("ok", "ok", "failed"):
        log.mark(status)  # the first mark is written at once, the others wait for the interval
    other = ProgressLog(area)
    other.mark("failed")  # another worker
    with Progress(area, total=10, enabled=False) as progress:
        assert progress.line().startswith("[emer] 2/10 clips") and progress.line().endswith("failures 1")
        log.flush()
        assert progress.line().startswith("[emer] 4/10 clips") and progress.line().endswith("failures 2")


def test_run_statistics_add_up_and_split_by_kind():
    clip_a = tally(tally({}, stage_time("faces", 1.5, 2.0)), {"ran_faces": 1, **model_load("faces")})
    clip_b = tally(stage_time("faces", 0.5, 1.0), {"ran_faces": 1, "restored_transcript": 1, "llm_requests": 0})
    times, loads, counts = split_stats(add_up([clip_a, clip_b]))
    assert times == {"faces": {"cpu_s": 2.0, "wall_s": 3.0}}
    assert loads == {"faces": 1}
    assert counts == {"ran_faces": 2, "restored_transcript": 1}  # zero counts are not carried
