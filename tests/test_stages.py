"""Stages are declared like plug-ins (their config section, checks, provenance and field group), and
the config's hash and dict (in every record's provenance and the manifest) stay what they were."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import pytest
from emer_builder.core.config import config_from_dict

# The config hash (every record's provenance.config_hash) and the manifest's config, computed by the code
# before stages declared their own sections (issue 20): a change here changes every record of every build.
CONFIG_HASHES: list[tuple[dict[str, Any], str, str]] = [
    ({}, "1e4df3520fd1142af848e28eb6fecf7e77c14025105ebf33f37bc49f2cb38ecd", "1ab0209bed7c55ffdba170177aeaa5e58e16a9395c8f85690c7e12b1d8526906"),
    (
        {
            "decode": {"sample_fps": 4, "audio_language": "en", "min_decoded_fraction": 0},
            "transcript": {"model": "tiny.en", "cpu_threads": 2, "language": "fr"},
            "faces": {"max_crops": 4, "detector": "opencv"},
        },
        "c60f731c6ea85e2d024813bb7ead4f17441f134ca6b9b94284c6cec9a0548fea",
        "fe8c18d9bd1f74cdc72276672d30ecba1dbf7bc48398a9978c3f9b261c26e457",
    ),
    (
        {
            "split": {"ratios": {"train": 0.5, "test": 0.5}, "group_pattern": "(\\w+)_"},
            "shards": {"max_records": 10},
            "explanation": {
                "default_sources": ["rules"],
                "annotations": ["a.csv"],
                "llm": {"base_url": "http://x/v1", "model": "m", "timeout_s": 5, "max_tokens": {"visual_clue": 100}},
            },
            "segment": {"mode": "subtitles", "min_s": 1},
            "extra_stages": ["tests.plugin_brightness:BrightnessStage"],
            "stage_config": {"brightness": {"dark_below": 80}},
            "corpus": "meld",
            "follow_external_links": True,
            "cache": {"enabled": False},
        },
        "a509eb5b2751abe62f316fdffbee3c1a407c927a09c00f0f1b1409147266c3b9",
        "602a7dd4a6a9778107223d792e00086ec98045bdc7747113f2ed13a1b904b30a",
    ),
]


@pytest.mark.parametrize("data, config_hash, dict_hash", CONFIG_HASHES)
def test_config_hash_and_dict_are_unchanged(data: dict[str, Any], config_hash: str, dict_hash: str):
    config = config_from_dict(data)
    assert config.config_hash() == config_hash
    assert hashlib.sha256(json.dumps(config.to_dict()).encode()).hexdigest() == dict_hash  # key order too
