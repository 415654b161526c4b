"""Model names against folders of the same name in the working folder."""

from __future__ import annotations

from pathlib import Path

import pytest
from emer_builder.transforms.stages.models import resolve_whisper, whisper_base_dir


def test_a_folder_called_base_in_the_working_folder_does_not_shadow_the_default_model(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    shipped = whisper_base_dir()
    if shipped is None:
        pytest.skip("the package that ships Whisper base is not installed")
    (tmp_path / "base").mkdir()  # e.g. a project's own `base/` folder
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "model.bin").write_bytes(b"")
    monkeypatch.chdir(tmp_path)
    assert resolve_whisper("base") == str(shipped)
    assert resolve_whisper("./base") == "base"  # a path names the folder
    assert resolve_whisper("mine") == "mine" and resolve_whisper(str(tmp_path / "mine")) == str(tmp_path / "mine")
