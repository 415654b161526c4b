"""Utterances from detected speech: Silero VAD (ships with faster-whisper) on the 16 kHz track, in bounded blocks."""

from __future__ import annotations

import subprocess
from collections.abc import Callable, Sequence

from emer_builder.core.config import SegmentConfig as SegmentOptions
from emer_builder.core.cpu import Child
from emer_builder.core.errors import ClipError, ProcessFault, exit_fault, one_line
from emer_builder.core.failures import retry_faults
from emer_builder.transforms.clip import SAMPLE_RATE
from emer_builder.transforms.keys import VideoInput
from emer_builder.transforms.probe import ffprobe_json
from emer_builder.transforms.segment.model import (
    STAGE,
    Segmentation,
    Utterance,
    assemble,
    segment_failure,
)
from emer_builder.transforms.segment.times import clock

VAD_BLOCK_S = 600.0  # speech detection reads the audio in blocks this long: memory stays bounded for any length


def has_audio(path: str) -> bool:
    data = ffprobe_json(path, ["-show_streams", "-select_streams", "a"]) or {}
    return bool(data.get("streams"))


def speech_regions(path: str, options: SegmentOptions) -> list[tuple[float, float]]:
    """Speech in the file's first audio track as (start_s, end_s), by faster-whisper's Silero VAD on
    16 kHz mono decoded with ffmpeg, block by block (bounded memory for any length). Silences of at
    least `speech_pause_s` end a region; regions longer than `max_s` are cut at a pause (or hard)."""
    import numpy as np
    from faster_whisper.vad import VadOptions, get_speech_timestamps

    vad = VadOptions(
        threshold=options.speech_threshold,
        min_speech_duration_ms=0,  # short speech is dropped (and noted) by the caller
        max_speech_duration_s=options.max_s,
        min_silence_duration_ms=int(options.speech_pause_s * 1000),
        speech_pad_ms=int(options.speech_pad_s * 1000),
    )
    cmd = ["ffmpeg", "-nostdin", "-v", "error", "-i", f"file:{path}", "-map", "0:a:0", "-ac", "1", "-ar", str(SAMPLE_RATE), "-f", "s16le", "-"]
    block_bytes = int(VAD_BLOCK_S * SAMPLE_RATE) * 2
    regions: list[tuple[float, float]] = []
    offset = 0.0
    slack = options.speech_pad_s + 0.05
    with Child(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE) as proc:  # its CPU: this thread's
        assert proc.stdout is not None and proc.stderr is not None
        while True:
            data = proc.stdout.read(block_bytes)
            if not data:
                break
            audio = np.frombuffer(data[: len(data) // 2 * 2], dtype="<i2").astype(np.float32) / 32768.0
            for n, ts in enumerate(get_speech_timestamps(audio, vad, sampling_rate=SAMPLE_RATE)):
                start, end = offset + ts["start"] / SAMPLE_RATE, offset + ts["end"] / SAMPLE_RATE
                # speech running across a block boundary: the last region of the block before reaches its end, this one starts the block
                across = n == 0 and regions and regions[-1][1] >= offset - slack and start <= offset + slack
                if across and end - regions[-1][0] <= options.max_s:
                    regions[-1] = (regions[-1][0], end)
                else:
                    regions.append((start, end))
            offset += len(audio) / SAMPLE_RATE
        error = proc.stderr.read().decode(errors="replace")
        proc.wait()
    fault = exit_fault(proc.returncode)
    if fault:
        raise ProcessFault(f"ffmpeg was {fault} while decoding the audio for speech segmentation")
    if proc.returncode != 0:
        raise ClipError(f"cannot decode the audio for speech segmentation ({one_line(error) or f'ffmpeg exit {proc.returncode}'})")
    return [(round(s, 3), round(e, 3)) for s, e in regions]


def segments_from_speech(
    videos: Sequence[VideoInput],
    options: SegmentOptions,
    duration_of: Callable[[VideoInput], float | None] | None = None,
    regions_of: Callable[[str, SegmentOptions], list[tuple[float, float]]] = speech_regions,
) -> Segmentation:
    """Every video cut at the pauses of its speech; regions shorter than `min_s` are dropped (noted).
    A video without audio or without speech is one failure row."""
    utterances: list[Utterance] = []
    result = Segmentation()
    for video in sorted(videos, key=lambda v: v.key):
        if not has_audio(video.path):
            result.failures.append(segment_failure(video.key, video.source_path, "no audio stream: speech segmentation needs one"))
            continue
        try:
            regions = retry_faults(lambda video=video: regions_of(video.path, options), video.source_path, STAGE)
        except ClipError as e:
            result.failures.append(segment_failure(video.key, video.source_path, str(e)))
            continue
        kept = [(s, e) for s, e in regions if e - s >= options.min_s]
        result.notes += [
            f"{video.source_path}: speech {clock(s)} to {clock(e)} is shorter than segment.min_s {options.min_s:g} s: dropped"
            for s, e in regions
            if e - s < options.min_s
        ]
        if not kept:
            result.failures.append(segment_failure(video.key, video.source_path, f"no speech of at least {options.min_s:g} s found"))
            continue
        utterances += [Utterance(video, s, e, f"{video.source_path} speech {n}") for n, (s, e) in enumerate(kept, 1)]
    result.extend(assemble(utterances, "speech", options, duration_of))
    return result.sort()


