"""Cut long videos into utterances: from subtitles, from a segment table, or from detected speech.

Episodes, films and interviews are minutes to hours long; EMER works on utterances. Every segmenter
here turns its input into `Utterance`s (a row or cue with times, not yet checked), and `assemble`
turns those into `Segment`s (one per record, with a key, an index and the dialogue context) plus one
failure row (stage `segment`) per utterance or video that cannot become a record. Nothing is
decoded here: a `Segment` says which window of which file the decode stage seeks to, so a long
video is never held in memory.

Keys: `{video_key}__{start_ms:09d}-{end_ms:09d}`, or the table's / corpus' id, both through
`keys.key_for` so they stay safe as WebDataset keys and file names. Exact repeats of a time window
in one video (MELD has them: one subtitle split into two utterances) get `_2`, `_3` in table order.

Plain Python, deterministic (everything sorted), no Beam.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import PurePosixPath

from emer_builder.core.config import SegmentConfig as SegmentOptions
from emer_builder.core.errors import UserError
from emer_builder.transforms.keys import VideoInput, display_path
from emer_builder.transforms.probe import probe_duration
from emer_builder.transforms.segment.model import DEFAULT_OPTIONS, STAGE, ContextLine, Segment, Segmentation, Utterance, assemble, corpus_labels
from emer_builder.transforms.segment.speech import segments_from_speech, speech_regions
from emer_builder.transforms.segment.subtitles import (
    Cue,
    SubtitleError,
    merge_cues,
    read_subtitle_file,
    segments_from_subtitles,
    subtitle_sidecars,
    subtitle_streams,
)
from emer_builder.transforms.segment.table import VideoIndex, segments_from_table, table_utterances
from emer_builder.transforms.segment.times import clock, id_key, parse_time, segment_key

Segmenter = Callable[[Sequence[VideoInput], SegmentOptions, Callable[[VideoInput], float | None] | None], Segmentation]


def _from_table(videos: Sequence[VideoInput], options: SegmentOptions, duration_of: Callable[[VideoInput], float | None] | None) -> Segmentation:
    assert options.table is not None  # check_options refuses `table` without one
    return segments_from_table(options.table, videos, options, duration_of=duration_of)


# The segmentation modes: one module each, one entry here. `none` (one file = one record) has no segmenter.
SEGMENTERS: dict[str, Segmenter] = {"subtitles": segments_from_subtitles, "table": _from_table, "speech": segments_from_speech}
MODES: tuple[str, ...] = ("none", *SEGMENTERS)


def check_options(options: SegmentOptions) -> None:
    """What the config's own rules cannot say (they check each key's range when the config is read):
    the mode is one the registry knows, and mode `table` has its table (the command line may set both)."""
    if options.mode not in MODES:
        raise UserError(f"config key segment.mode must be one of {', '.join(MODES)}, got {options.mode!r}")
    if options.mode == "table" and not options.table:
        raise UserError("--segment table needs a segment table (--segment-table PATH or segment.table in build.yaml)")


# ---------------------------------------------------------------- one entry point


def segment_videos(
    videos: Sequence[VideoInput], options: SegmentOptions, duration_of: Callable[[VideoInput], float | None] | None = None, inside: str | None = None
) -> Segmentation | None:
    """The build's segmentation for `options.mode`; None for `none` (one file = one record). `inside`: the
    input folder, resolved, when links leading outside it are not followed (subtitle sidecars)."""
    check_options(options)
    if options.mode == "subtitles":
        return segments_from_subtitles(videos, options, duration_of, inside)
    segmenter = SEGMENTERS.get(options.mode)
    return None if segmenter is None else segmenter(videos, options, duration_of)


def sidecar_files(videos: Sequence[VideoInput], inside: str | None = None) -> set[str]:
    """Subtitle files beside input videos, as paths relative to the input folder (the form `match_videos`
    lists skipped files in): they are read with their video, not skipped (a link leading outside `inside` is not one)."""
    out = set()
    for v in videos:
        folder = PurePosixPath(v.source_path).parent
        out |= {(folder / display_path(p.name)).as_posix() for p in subtitle_sidecars(v.path, inside=inside)}
    return out


__all__ = [
    "DEFAULT_OPTIONS",
    "SEGMENTERS",
    "STAGE",
    "MODES",
    "ContextLine",
    "Cue",
    "Segment",
    "SegmentOptions",
    "Segmentation",
    "SubtitleError",
    "Utterance",
    "VideoIndex",
    "assemble",
    "check_options",
    "clock",
    "corpus_labels",
    "id_key",
    "merge_cues",
    "parse_time",
    "probe_duration",
    "read_subtitle_file",
    "segment_key",
    "segment_videos",
    "segments_from_speech",
    "segments_from_subtitles",
    "segments_from_table",
    "sidecar_files",
    "speech_regions",
    "subtitle_sidecars",
    "subtitle_streams",
    "table_utterances",
]

