"""Record schema v1: one row per clip.

Field groups, one per stage: media (probe), transcript (faster-whisper), faces (DeepFace +
expression model), acoustics (openSMILE eGeMAPSv02), explanation (annotations, rules or an LLM),
provenance. A group whose input is absent
(no audio track, no face) keeps its `reason` and leaves its values null: a valid result, not a failure.
"""

from __future__ import annotations

import pyarrow as pa
from emer_builder.schemas.fields import Field, FieldGroup, RecordSchema, list_of, struct
from emer_builder.schemas.segments import LABELS, SEGMENT

VERSION = "1.4.0"  # 1.1.0 added the explanation group; 1.2.0 the media group's stream choice and decoded-length fields; 1.3.0 the segment and labels groups and the explanation fields' translations; 1.4.0 the video group (the record's own MP4 or frames) and provenance.video_encoder

EXPRESSION_CLASSES: tuple[str, ...] = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")

EGEMAPS_V02_FUNCTIONALS: tuple[str, ...] = (
    "F0semitoneFrom27.5Hz_sma3nz_amean",
    "F0semitoneFrom27.5Hz_sma3nz_stddevNorm",
    "F0semitoneFrom27.5Hz_sma3nz_percentile20.0",
    "F0semitoneFrom27.5Hz_sma3nz_percentile50.0",
    "F0semitoneFrom27.5Hz_sma3nz_percentile80.0",
    "F0semitoneFrom27.5Hz_sma3nz_pctlrange0-2",
    "F0semitoneFrom27.5Hz_sma3nz_meanRisingSlope",
    "F0semitoneFrom27.5Hz_sma3nz_stddevRisingSlope",
    "F0semitoneFrom27.5Hz_sma3nz_meanFallingSlope",
    "F0semitoneFrom27.5Hz_sma3nz_stddevFallingSlope",
    "loudness_sma3_amean",
    "loudness_sma3_stddevNorm",
    "loudness_sma3_percentile20.0",
    "loudness_sma3_percentile50.0",
    "loudness_sma3_percentile80.0",
    "loudness_sma3_pctlrange0-2",
    "loudness_sma3_meanRisingSlope",
    "loudness_sma3_stddevRisingSlope",
    "loudness_sma3_meanFallingSlope",
    "loudness_sma3_stddevFallingSlope",
    "spectralFlux_sma3_amean",
    "spectralFlux_sma3_stddevNorm",
    "mfcc1_sma3_amean",
    "mfcc1_sma3_stddevNorm",
    "mfcc2_sma3_amean",
    "mfcc2_sma3_stddevNorm",
    "mfcc3_sma3_amean",
    "mfcc3_sma3_stddevNorm",
    "mfcc4_sma3_amean",
    "mfcc4_sma3_stddevNorm",
    "jitterLocal_sma3nz_amean",
    "jitterLocal_sma3nz_stddevNorm",
    "shimmerLocaldB_sma3nz_amean",
    "shimmerLocaldB_sma3nz_stddevNorm",
    "HNRdBACF_sma3nz_amean",
    "HNRdBACF_sma3nz_stddevNorm",
    "logRelF0-H1-H2_sma3nz_amean",
    "logRelF0-H1-H2_sma3nz_stddevNorm",
    "logRelF0-H1-A3_sma3nz_amean",
    "logRelF0-H1-A3_sma3nz_stddevNorm",
    "F1frequency_sma3nz_amean",
    "F1frequency_sma3nz_stddevNorm",
    "F1bandwidth_sma3nz_amean",
    "F1bandwidth_sma3nz_stddevNorm",
    "F1amplitudeLogRelF0_sma3nz_amean",
    "F1amplitudeLogRelF0_sma3nz_stddevNorm",
    "F2frequency_sma3nz_amean",
    "F2frequency_sma3nz_stddevNorm",
    "F2bandwidth_sma3nz_amean",
    "F2bandwidth_sma3nz_stddevNorm",
    "F2amplitudeLogRelF0_sma3nz_amean",
    "F2amplitudeLogRelF0_sma3nz_stddevNorm",
    "F3frequency_sma3nz_amean",
    "F3frequency_sma3nz_stddevNorm",
    "F3bandwidth_sma3nz_amean",
    "F3bandwidth_sma3nz_stddevNorm",
    "F3amplitudeLogRelF0_sma3nz_amean",
    "F3amplitudeLogRelF0_sma3nz_stddevNorm",
    "alphaRatioV_sma3nz_amean",
    "alphaRatioV_sma3nz_stddevNorm",
    "hammarbergIndexV_sma3nz_amean",
    "hammarbergIndexV_sma3nz_stddevNorm",
    "slopeV0-500_sma3nz_amean",
    "slopeV0-500_sma3nz_stddevNorm",
    "slopeV500-1500_sma3nz_amean",
    "slopeV500-1500_sma3nz_stddevNorm",
    "spectralFluxV_sma3nz_amean",
    "spectralFluxV_sma3nz_stddevNorm",
    "mfcc1V_sma3nz_amean",
    "mfcc1V_sma3nz_stddevNorm",
    "mfcc2V_sma3nz_amean",
    "mfcc2V_sma3nz_stddevNorm",
    "mfcc3V_sma3nz_amean",
    "mfcc3V_sma3nz_stddevNorm",
    "mfcc4V_sma3nz_amean",
    "mfcc4V_sma3nz_stddevNorm",
    "alphaRatioUV_sma3nz_amean",
    "hammarbergIndexUV_sma3nz_amean",
    "slopeUV0-500_sma3nz_amean",
    "slopeUV500-1500_sma3nz_amean",
    "spectralFluxUV_sma3nz_amean",
    "loudnessPeaksPerSec",
    "VoicedSegmentsPerSec",
    "MeanVoicedSegmentLengthSec",
    "StddevVoicedSegmentLengthSec",
    "MeanUnvoicedSegmentLength",
    "StddevUnvoicedSegmentLength",
    "equivalentSoundLevel_dBp",
)


def _expression_scores(name: str, doc: str) -> Field:
    return struct(name, doc, [Field(c, pa.float32(), f"probability of `{c}`") for c in EXPRESSION_CLASSES])


MEDIA = FieldGroup(
    "media",
    "What ffprobe says about the file, what was decoded from it, and what was sampled.",
    (
        Field("container", pa.string(), "container format as ffprobe names it, e.g. `mov,mp4,m4a,3gp,3g2,mj2`"),
        Field("size_bytes", pa.int64(), "file size in bytes"),
        Field("sha256", pa.string(), "sha256 of the file bytes (hex)"),
        Field("duration_s", pa.float64(), "duration in seconds: the header's when decoding agrees with it, else `decoded_duration_s`"),
        Field("video_codec", pa.string(), "codec of the decoded video stream (the first that is not cover art)"),
        Field("width", pa.int32(), "frame width in pixels as displayed (after any rotation metadata)"),
        Field("height", pa.int32(), "frame height in pixels as displayed"),
        Field("fps", pa.float64(), "average frame rate of the video stream"),
        Field("has_audio", pa.bool_(), "whether an audio stream was decoded (false when the file has none, or none with samples)"),
        Field("audio_codec", pa.string(), "codec of the decoded audio stream, null without audio"),
        Field("audio_sample_rate", pa.int32(), "sample rate of the decoded audio stream in Hz, null without audio"),
        Field("sampled_fps", pa.float64(), "rate at which frames were sampled for face analysis"),
        Field("frames_sampled", pa.int32(), "number of frames sampled"),
        Field(
            "audio_stream",
            pa.int32(),
            "which audio stream was decoded, counted among the file's audio streams from 0 (ffmpeg `a:N`): the one asked for "
            "(decode.audio_language, decode.audio_stream), else the default-disposition one, else the first; null when the file has no audio stream",
        ),
        Field("audio_language", pa.string(), "language tag of the decoded audio stream as the file gives it (ISO 639-2, e.g. `eng`), null when untagged"),
        list_of(
            "other_audio_streams",
            "the file's audio streams that were not decoded (a dub, commentary); empty when it has one or none",
            [
                Field("stream", pa.int32(), "number among the file's audio streams (ffmpeg `a:N`)"),
                Field("codec", pa.string(), "codec name"),
                Field("language", pa.string(), "language tag as the file gives it, null when untagged"),
                Field("channels", pa.int32(), "number of channels"),
                Field("is_default", pa.bool_(), "whether the stream has the default disposition"),
            ],
        ),
        Field("declared_duration_s", pa.float64(), "duration the container header declares, null when it declares none (it can be wrong)"),
        Field(
            "decoded_duration_s",
            pa.float64(),
            "length actually decoded: the end of the last video frame or of the audio samples, whichever is later; "
            "decoding stops at decode.max_duration_s whatever the header says",
        ),
        Field("decoded_fraction", pa.float32(), "`decoded_duration_s / declared_duration_s`, null without a declared duration"),
        Field(
            "truncated",
            pa.bool_(),
            "decoding ended with read errors well before the declared duration: the file is cut short (a partial download or copy); "
            "below decode.min_decoded_fraction such a file is a failure instead",
        ),
    ),
)

TRANSCRIPT = FieldGroup(
    "transcript",
    "Speech recognition by faster-whisper (CTranslate2) on the 16 kHz mono track.",
    (
        Field("reason", pa.string(), "why the values are null (e.g. `no audio track`), else null"),
        Field("model", pa.string(), "Whisper model id or path"),
        Field("language", pa.string(), "ISO 639-1 code, detected or forced"),
        Field("language_probability", pa.float32(), "probability of the detected language (1.0 when forced)"),
        Field("text", pa.string(), "full transcript, empty when no speech was found"),
        Field("word_count", pa.int32(), "words in `text` (CJK characters count as words)"),
        list_of(
            "segments",
            "decoded segments in time order",
            [
                Field("start_s", pa.float32(), "segment start in seconds"),
                Field("end_s", pa.float32(), "segment end in seconds"),
                Field("text", pa.string(), "segment text"),
                Field("avg_logprob", pa.float32(), "mean token log-probability"),
                Field("no_speech_prob", pa.float32(), "probability that the segment holds no speech"),
            ],
        ),
    ),
)

FACES = FieldGroup(
    "faces",
    "The main face over time: DeepFace detection and alignment on sampled frames, tracked across frames.",
    (
        Field("reason", pa.string(), "why `crops` is empty (e.g. `no face in 9 sampled frames`), else null"),
        Field("detector", pa.string(), "face detector: `yunet@320px` (YuNet from libfacedetection at that detection size, the default) or a DeepFace backend (`opencv`, ...)"),
        Field("expression_model", pa.string(), "facial-expression model that scored the crops"),
        Field("frames_with_face", pa.int32(), "sampled frames in which any face was detected"),
        Field("tracks", pa.int32(), "distinct faces (tracks) found over the clip"),
        Field("crop_size", pa.int32(), "side of the square JPEG crops in pixels"),
        list_of(
            "crops",
            "one crop of the main face per sampled frame where it was found; image `face_NNN.jpg` in the tar",
            [
                Field("index", pa.int32(), "crop number NNN of `face_NNN.jpg`"),
                Field("time_s", pa.float32(), "frame time in seconds"),
                struct(
                    "box",
                    "face box in the video's own pixels (as displayed), whatever the sampling size",
                    [Field(n, pa.int32(), d) for n, d in (("x", "left"), ("y", "top"), ("w", "width"), ("h", "height"))],
                ),
                Field("confidence", pa.float32(), "detector confidence"),
                _expression_scores("expression", "facial-expression probabilities, 7 basic classes"),
            ],
        ),
        _expression_scores("expression_mean", "mean of the crops' expression probabilities, null without crops"),
    ),
)

ACOUSTICS = FieldGroup(
    "acoustics",
    "openSMILE eGeMAPSv02 functionals and a prosody summary of the 16 kHz mono track.",
    (
        Field("reason", pa.string(), "why the values are null (e.g. `no audio track`), else null"),
        Field("feature_set", pa.string(), "openSMILE feature set and version"),
        struct(
            "egemaps",
            "the 88 eGeMAPSv02 functionals, named as openSMILE names them",
            [Field(n, pa.float32(), "eGeMAPSv02 functional") for n in EGEMAPS_V02_FUNCTIONALS],
        ),
        struct(
            "prosody",
            "summary of pitch, loudness and tempo",
            [
                Field("f0_mean_semitone", pa.float32(), "mean F0 over voiced frames, semitones above 27.5 Hz"),
                Field("f0_std_semitone", pa.float32(), "standard deviation of F0 over voiced frames, semitones"),
                Field("f0_range_semitone", pa.float32(), "5th to 95th percentile range of F0, semitones"),
                Field("loudness_mean", pa.float32(), "mean loudness (openSMILE sone-like units)"),
                Field("voiced_ratio", pa.float32(), "share of 10 ms frames with a pitch"),
                Field("speech_rate_wps", pa.float32(), "transcript words per second of transcribed speech"),
            ],
        ),
    ),
)

VIDEO = FieldGroup(
    "video",
    "The record's own video in the tar: its window of the file as H.264/AAC MP4 (`mp4`), or frames spread over it (`frame_NNN.jpg`); config section `video`.",
    (
        Field("mode", pa.string(), "`clip` (an `mp4` member), `frames` (`frame_NNN.jpg` members) or `none` (no member)"),
        Field("start_s", pa.float64(), "where the window starts in the source file, seconds (0 for a whole-file clip)"),
        Field("end_s", pa.float64(), "where it ends in the source file, seconds: an utterance's end, else the clip's duration"),
        Field("width", pa.int32(), "pixel width of the MP4 or of each frame (the video's as displayed, scaled to fit `video.max_side` / `video.frame_max_side`)"),
        Field("height", pa.int32(), "pixel height of the MP4 or of each frame"),
        Field("fps", pa.float64(), "clip: the MP4's average frame rate (the source's); null otherwise"),
        Field("duration_s", pa.float64(), "clip: the MP4's duration as ffprobe reads it (within one frame of `end_s - start_s`); null otherwise"),
        Field("video_frames", pa.int32(), "clip: video frames in the MP4; null otherwise"),
        Field("has_audio", pa.bool_(), "clip: whether the MP4 holds the decoded audio stream (AAC); false without audio; null otherwise"),
        Field("crf", pa.int32(), "clip: x264 constant rate factor it was encoded with; null otherwise"),
        Field("size_bytes", pa.int64(), "bytes of the `mp4` member, or of all `frame_NNN.jpg` members together; null for `none`"),
        list_of(
            "frames",
            "frames: one per equal slice of the window, in time order; image `frame_NNN.jpg` in the tar; empty otherwise",
            [
                Field("index", pa.int32(), "frame number NNN of `frame_NNN.jpg`"),
                Field("time_s", pa.float32(), "frame time in seconds from the window's start"),
            ],
        ),
    ),
)


def _field_provenance() -> list[Field]:
    return [
        Field("source", pa.string(), "`human` (annotation tables), `rules:<version>` or `llm:<model>`; null when no source gave a value"),
        Field("prompt_version", pa.string(), "version of the prompt files (llm) or of the rules (rules); null for human values"),
        Field("time", pa.string(), "UTC ISO 8601 time the LLM answered (kept in the response cache, so re-runs give the same bytes); null for human and rules values"),
        Field("reason", pa.string(), "why the value is null (each configured source's reason), else null"),
    ]


def _translations(value: str, value_type: pa.DataType) -> Field:
    return list_of(
        "translations",
        "the same value in the other languages of a bilingual annotation table (EMER-Fine / OV-MERD give Chinese and English), sorted by language; empty for other sources",
        [Field("language", pa.string(), "ISO 639-1 code"), Field(value, value_type, f"`{value}` in that language")],
    )


def _explained_text(name: str, doc: str) -> Field:
    return struct(
        name, doc, [Field("text", pa.string(), "the text"), Field("language", pa.string(), "ISO 639-1 code of `text`"), *_field_provenance(), _translations("text", pa.string())]
    )


EXPLANATION = FieldGroup(
    "explanation",
    "The EMER explanation: clues per modality, a multimodal explanation, open-vocabulary labels; each field from annotation tables, the rules describer or an LLM.",
    (
        _explained_text("subtitle", "the clip's subtitle from an annotation table, else the subtitle cue(s) or table text the utterance was cut at (`segment.text`, source `human`); the transcript group holds what Whisper heard"),
        _explained_text("visual_clue", "what the face and body show over the clip (beginning, middle, end), identity ignored"),
        _explained_text("acoustic_clue", "how the voice sounds: pitch, loudness, tempo, voice quality"),
        _explained_text("lexical_clue", "what the words say about emotion, read with the visual and acoustic clues"),
        _explained_text("multimodal_explanation", "one explanation reasoning over the three clues"),
        struct(
            "open_vocab_labels",
            "open-vocabulary emotion labels extracted from the explanation",
            [
                Field("labels", pa.list_(pa.string()), "labels as given (annotation, rules or LLM), order kept"),
                Field("language", pa.string(), "ISO 639-1 code of `labels`"),
                Field("normalised", pa.list_(pa.string()), "lowercased, stripped, surface forms mapped to emotion-wheel base words; null without wheel tables"),
                list_of(
                    "wheel",
                    "the labels' categories on each of the five emotion wheels; null without wheel tables",
                    [
                        Field("wheel", pa.string(), "`wheel1` .. `wheel5`"),
                        Field("level1", pa.list_(pa.string()), "level-1 (coarse) categories, sorted"),
                        Field("level2", pa.list_(pa.string()), "level-2 categories, sorted"),
                    ],
                ),
                *_field_provenance(),
                _translations("labels", pa.list_(pa.string())),
            ],
        ),
        struct(
            "discrete_label",
            "one discrete emotion label (MER2023 / EMER-V1 `emotions`)",
            [
                Field("label", pa.string(), "the label as given"),
                Field("language", pa.string(), "ISO 639-1 code of `label`"),
                *_field_provenance(),
                _translations("label", pa.string()),
            ],
        ),
        struct("valence", "valence score from an annotation table (MER2023: -5 to 5)", [Field("value", pa.float32(), "the score"), *_field_provenance()]),
        list_of(
            "evidence",
            "what each rules-made sentence rests on: one row per (sentence, measured value)",
            [
                Field("field", pa.string(), "explanation field holding the sentence"),
                Field("sentence", pa.string(), "the sentence"),
                Field("measure", pa.string(), "record field path of the measured value, e.g. `acoustics.prosody.f0_mean_semitone`"),
                Field("value", pa.float32(), "the measured value"),
                Field("corpus_percentile", pa.float32(), "share of the build's clips with a lower value (0-100); null when not relative to the corpus"),
            ],
        ),
    ),
)


PROVENANCE = FieldGroup(
    "provenance",
    "How this record was made.",
    (
        Field("tool", pa.string(), "`emer-builder` and its version"),
        Field("schema_version", pa.string(), "record schema version"),
        Field("config_hash", pa.string(), "sha256 of the canonical build config"),
        Field("whisper_model", pa.string(), "Whisper model used for the transcript"),
        Field("face_detector", pa.string(), "face detector: `yunet@320px` or a DeepFace backend (`opencv`, ...)"),
        Field("expression_model", pa.string(), "facial-expression model"),
        Field("opensmile", pa.string(), "openSMILE package version and feature set"),
        Field("explanation_sources", pa.string(), "configured sources per explanation field, tried in order, e.g. `visual_clue=annotations>rules; ...`"),
        Field("emotion_wheel", pa.string(), "emotion-wheel tables that normalised the labels (origin and sha256 prefix), null without"),
        Field("video_encoder", pa.string(), "what made the `video` members: ffmpeg version, codecs and settings; null when `video.mode` is none"),
    ),
)

SCHEMA = RecordSchema(
    VERSION,
    [
        Field("key", pa.string(), "clip key, from the path relative to the input folder; the WebDataset `__key__`", nullable=False),
        Field("split", pa.string(), "`train`, `validation` or `test`", nullable=False),
        Field("source_path", pa.string(), "path of the video relative to the input folder", nullable=False),
    ],
    [MEDIA, TRANSCRIPT, FACES, ACOUSTICS, EXPLANATION, PROVENANCE, SEGMENT, LABELS, VIDEO],
)

# One row per input that could not become a record (OUT/failures.parquet).
FAILURE_SCHEMA = pa.schema(
    [
        pa.field("key", pa.string()),
        pa.field("source_path", pa.string()),
        pa.field("stage", pa.string()),
        pa.field("error_class", pa.string()),
        pa.field("message", pa.string()),
    ]
)
