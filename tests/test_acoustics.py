import contextlib
from pathlib import Path

import numpy as np
import pytest
import soundfile
from emer_builder.schemas.v1 import EGEMAPS_V02_FUNCTIONALS
from emer_builder.transforms.clip import Clip
from emer_builder.transforms.stages.acoustics import AcousticFeatures, AcousticsStage, SmilePass, speech_rate


@pytest.fixture(scope="module")
def features() -> AcousticFeatures:
    return AcousticFeatures()


def test_egemaps_of_read_speech_are_in_physical_ranges(features: AcousticFeatures, librivox_dir: Path):
    audio, _ = soundfile.read(librivox_dir / "sense_and_sensibility_01_austen_64kb-0870.wav", dtype="float32")
    transcript = {"word_count": 24, "segments": [{"start_s": 0.0, "end_s": 6.8}]}
    result = features.extract(audio, transcript)
    egemaps = result["egemaps"]
    assert tuple(egemaps) == EGEMAPS_V02_FUNCTIONALS
    assert all(v is not None for v in egemaps.values())
    # a male reader: F0 of 80-250 Hz is 17-39 semitones above 27.5 Hz
    assert 17 < egemaps["F0semitoneFrom27.5Hz_sma3nz_amean"] < 39
    assert 0 < egemaps["loudness_sma3_amean"] < 5
    assert 0 < egemaps["jitterLocal_sma3nz_amean"] < 0.1
    assert 200 < egemaps["F1frequency_sma3nz_amean"] < 1000 < egemaps["F2frequency_sma3nz_amean"] < 2500
    assert -60 < egemaps["equivalentSoundLevel_dBp"] < 0
    assert 1 < egemaps["VoicedSegmentsPerSec"] < 8
    prosody = result["prosody"]
    assert abs(prosody["f0_mean_semitone"] - egemaps["F0semitoneFrom27.5Hz_sma3nz_amean"]) < 1.0
    assert 0.5 < prosody["f0_std_semitone"] < 10 and 2 < prosody["f0_range_semitone"] < 30
    assert 0.3 < prosody["voiced_ratio"] < 0.9
    assert prosody["speech_rate_wps"] == pytest.approx(24 / 6.8, abs=0.01)
    assert result["feature_set"].startswith("opensmile ") and result["reason"] is None


def test_silence_has_no_pitch(features: AcousticFeatures):
    result = features.extract(np.zeros(16_000 * 2, dtype=np.float32), None)
    assert result["prosody"]["voiced_ratio"] == 0.0 and result["prosody"]["f0_mean_semitone"] is None
    assert result["prosody"]["speech_rate_wps"] is None


def test_one_smile_pass_gives_what_process_signal_gives(features: AcousticFeatures, librivox_dir: Path):
    """Issue 22: the graph set up once and both sinks read in one run hold opensmile's own numbers, bit
    for bit, clip after clip (a run leaves nothing behind for the next), and a block too short for a
    frame is a row of NaN, as process_signal fills it."""
    import opensmile

    speech, _ = soundfile.read(librivox_dir / "sense_and_sensibility_01_austen_64kb-0870.wav", dtype="float32")
    noise = np.random.default_rng(0).uniform(-1, 1, 16_000).astype(np.float32)
    signals = [speech, speech[:24_000], np.zeros(16_000, np.float32), noise, np.zeros(100, np.float32), np.ones(3_000, np.float32), speech[5_000:30_001]]
    levels = (opensmile.FeatureLevel.Functionals, opensmile.FeatureLevel.LowLevelDescriptors)
    smiles = [opensmile.Smile(feature_set=opensmile.FeatureSet.eGeMAPSv02, feature_level=level) for level in levels]
    one = SmilePass()
    for samples in signals + signals[::-1]:
        with pytest.warns(UserWarning) if len(samples) < 1_000 else contextlib.nullcontext():  # "Segment too short, filling with NaN."
            expected = [smile.process_signal(samples, 16_000).to_numpy() for smile in smiles]
        func, lld = one(samples)
        assert np.array_equal(func.astype(np.float64), expected[0][0].astype(np.float64), equal_nan=True) and func.shape == expected[0][0].shape
        assert (
            np.array_equal(lld.astype(np.float64), expected[1].astype(np.float64), equal_nan=True)
            and lld.shape == expected[1].shape
            and lld.dtype == expected[1].dtype
        )
    assert one.names == tuple(smiles[0].feature_names) and one.lld_names == tuple(smiles[1].feature_names)


def test_no_audio_track_is_a_null_group_with_reason():
    clip = Clip("k", "/nonexistent", "k.mp4")
    AcousticsStage().process(clip)
    acoustics = clip.fields["acoustics"]
    assert acoustics["reason"] == "no audio track" and acoustics["egemaps"] is None and acoustics["prosody"] is None
    assert acoustics["feature_set"].startswith("opensmile 2.") and acoustics["feature_set"].endswith("eGeMAPSv02")


def test_speech_rate_from_segments():
    assert speech_rate({"word_count": 10, "segments": [{"start_s": 0.0, "end_s": 2.0}, {"start_s": 3.0, "end_s": 5.0}]}) == 2.5
    assert speech_rate({"word_count": 0, "segments": []}) is None
    assert speech_rate(None) is None
