"""`emer build`: the driver around the Beam graph (pipelines/graph.py).

check inputs, config, stages and OUT (locked) -> run the graph into a staging folder -> verify that
every input is exactly one record or one failure row -> manifest, card, report -> commit into OUT
(a journal makes the commit finish or roll forward after a kill at any instant).
"""

from __future__ import annotations

import dataclasses
import errno
import fcntl
import hashlib
import json
import logging
import os
import shutil
import socket
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from emer_builder.core.config import BuildConfig
from emer_builder.core.errors import BuildFailed, ClipError, UserError, fault_in, one_line
from emer_builder.core.failures import failure_row
from emer_builder.core.urls import file_system, is_url, stamp
from emer_builder.pipelines.explain_setup import describe_sources, join_names, prepare
from emer_builder.pipelines.object_out import CREDENTIALS as STORE_CREDENTIALS
from emer_builder.pipelines.object_out import STAGING_PREFIX, StoredOut
from emer_builder.pipelines.stages import build_stages, names_runner, provenance, record_schema
from emer_builder.release.manifest import BUILD_OUTPUTS, MANIFEST
from emer_builder.release.store import store_errors
from emer_builder.transforms.clip import Clip, Stage
from emer_builder.transforms.clip_cache import chain_digests
from emer_builder.transforms.corpora import load_corpus
from emer_builder.transforms.keys import OUTSIDE_INPUT, VIDEO_EXTENSIONS, VideoInput, match_videos
from emer_builder.transforms.segment import Segmentation, check_options, segment_videos, sidecar_files
from emer_builder.transforms.split import SplitAssigner

LOCK_FILE = ".emer-lock"
JOURNAL = ".emer-commit"


def check_stages(config: BuildConfig) -> None:
    """Set every stage up once in the driver, so a model that cannot load (a typo, no network
    for a hub model, a bad language code) is one clear error before any worker starts."""
    for stage in build_stages(config):
        try:
            stage.check()
        except Exception as e:  # noqa: BLE001
            raise UserError(f"stage {stage.name} cannot start: {type(e).__name__}: {one_line(e)}") from None


def input_clips(inputs: list[VideoInput], early_failures: list[dict[str, str]], segmentation: Segmentation | None = None) -> list[Clip]:
    """Every input as a clip (or every utterance, when segmented); inputs that failed before the
    graph (key collisions, bad segments) carry their row."""
    if segmentation is None:
        clips = [Clip(i.key, i.path, i.source_path) for i in inputs]
    else:
        clips = [
            Clip(s.key, s.path, s.source_path, start_s=s.start_s if s.seek else None, end_s=s.end_s if s.seek else None, fields={"segment": s.segment_fields(), "labels": s.labels_fields()})
            for s in segmentation.segments
        ]
        early_failures = [*early_failures, *segmentation.failures]
    clips += [Clip(f["key"], "", f["source_path"], failure=f) for f in early_failures]
    return sorted(clips, key=lambda c: (c.key, c.source_path))


def segment_inputs(config: BuildConfig, videos: Path, inputs: list[VideoInput]) -> Segmentation | None:
    """Utterances of the inputs (subtitles, a table, speech) or of a corpus' own layout; None: one file = one record."""
    if config.corpus:
        return load_corpus(config.corpus, videos, config.segment, config.follow_external_links)
    return segment_videos(inputs, config.segment)


def split_settings(config: BuildConfig, segmented: bool) -> BuildConfig:
    """Segmented inputs keep each source video (or dialogue) in one split unless the config says otherwise."""
    if segmented and config.split.group_by == "key":
        return dataclasses.replace(config, split=dataclasses.replace(config.split, group_by="segment.group"))
    return config


@dataclass
class BuildSummary:
    out: str
    inputs: int
    records_per_split: dict[str, int]
    failures_by_stage: dict[str, int]
    skipped_files: list[str]
    clips_with_faces: int
    languages: dict[str, int]
    audio_hours: float
    wall_s: float
    stage_seconds: dict[str, dict[str, float]] = field(default_factory=dict)
    model_loads: dict[str, int] = field(default_factory=dict)  # stage -> setups over all workers
    explanation_sources: dict[str, dict[str, int]] = field(default_factory=dict)  # field -> source -> records
    annotations: dict[str, Any] = field(default_factory=dict)
    emotion_wheel: str = ""
    llm: dict[str, int] = field(default_factory=dict)  # requests, cache hits and misses, fields left null
    up_to_date: bool = False  # nothing changed since the build in OUT: it was kept as it is
    finished_commit: bool = False  # this build first finished the commit an interrupted (killed) build left in OUT
    truncated: list[dict[str, Any]] = field(default_factory=list)  # records flagged media.truncated (manifest.json "truncated")
    segmentation: dict[str, Any] = field(default_factory=dict)  # method, utterances, videos, failures, rows_without_video
    stage_runs: dict[str, int] = field(default_factory=dict)  # stage -> clips it computed (the rest came from the cache)
    cache_restored: dict[str, int] = field(default_factory=dict)  # last stage restored from the cache -> clips
    manifest: dict[str, Any] = field(repr=False, default_factory=dict)

    @property
    def records(self) -> int:
        return sum(self.records_per_split.values())

    @property
    def failures(self) -> int:
        return sum(self.failures_by_stage.values())

    def text(self) -> str:
        splits = ", ".join(f"{k} {v}" for k, v in sorted(self.records_per_split.items())) or "none"
        fails = ", ".join(f"{k} {v}" for k, v in sorted(self.failures_by_stage.items())) or "none"
        langs = ", ".join(f"{k} {v}" for k, v in sorted(self.languages.items())) or "none"
        if self.up_to_date and self.finished_commit:
            first = f"finished the commit left by an interrupted build: {self.records} records from {self.inputs} inputs in {self.out} (its inputs have not changed since)"
        elif self.up_to_date:
            first = f"up to date: {self.records} records from {self.inputs} inputs in {self.out} (nothing changed)"
        else:
            first = f"built {self.records} records from {self.inputs} inputs in {self.wall_s:.1f} s -> {self.out}"
            if self.finished_commit:
                first += " (after finishing the commit left by an interrupted build)"
        lines = [
            first,
            f"  splits: {splits}",
            f"  failures: {self.failures} ({fails}); details in failures.parquet",
            f"  faces found in {self.clips_with_faces}/{self.records} clips; languages: {langs}; audio {self.audio_hours * 3600:.1f} s ({self.audio_hours:.4f} h)",
        ]
        if self.truncated:
            cut = [f"{t['source_path']} ({_share(t.get('decoded_fraction'))} of {t.get('declared_duration_s') or 0:.2f} s)" for t in self.truncated]
            lines.append(f"  truncated: {len(cut)} records decoded only in part (media.truncated; listed in manifest.json and report.html){_first(cut)}")
        cpu_total = sum(t["cpu_s"] for t in self.stage_seconds.values())
        if cpu_total > 0:
            shares = ", ".join(f"{k} {100 * t['cpu_s'] / cpu_total:.0f}%" for k, t in self.stage_seconds.items())
            lines.append(f"  stage CPU time {cpu_total:.1f} s: {shares}")
        if self.model_loads:
            lines.append("  stage set-ups (model loads): " + ", ".join(f"{k} {v}" for k, v in self.model_loads.items()))
        if self.stage_runs:
            lines.append("  clips run per stage: " + ", ".join(f"{k} {v}" for k, v in self.stage_runs.items()) + f"; restored from the cache up to: {_restored(self.cache_restored)}")
        if self.explanation_sources:
            by_field = [f"{name} " + "/".join(f"{src} {n}" for src, n in counts.items()) for name, counts in self.explanation_sources.items() if name != "subtitle"]
            lines.append("  explanation: " + "; ".join(by_field))
        lines.append(f"  emotion wheel: {self.emotion_wheel}")
        lines.append(f"  report: {self.out.rstrip('/')}/report.html")
        if self.llm:
            c = self.llm
            lines.append(
                f"  llm: {c.get('calls', 0)} requests, {c.get('cache_hits', 0)} answers from the cache, {c.get('failures', 0)} fields left null after retries"
            )
        files = self.annotations.get("files") or []
        if files:
            no_video, no_ann = self.annotations["names_without_video"], self.annotations["videos_without_annotation"]
            lines.append(
                f"  annotations: {len(files)} tables; {len(no_video)} names without a video{_first(no_video)}; {len(no_ann)} videos without an annotation{_first(no_ann)}"
            )
        if self.segmentation:
            s = self.segmentation
            lines.append(
                f"  segmented ({s['method']}): {s['utterances']} utterances from {s['videos']} videos; {s['failures']} segment failures; "
                f"{len(s['rows_without_video'])} table rows naming no video{_first(s['rows_without_video'])}"
            )
        if self.skipped_files:
            shown = ", ".join(self.skipped_files[:5]) + (" ..." if len(self.skipped_files) > 5 else "")
            lines.append(f"  skipped {len(self.skipped_files)} entries (not videos, or folders not followed): {shown}")
        leaving = links_leaving(self.skipped_files)
        if leaving:
            lines.append(f"  not followed: {len(leaving)} symlinks leading outside the input folder{_first(leaving)}; set follow_external_links: true in the config to include them")
        return "\n".join(lines)


def links_leaving(skipped: list[str]) -> list[str]:
    """The names of the skipped entries that are symlinks leading outside the input folder."""
    return [s[: s.index(" (symlink to ")] for s in skipped if OUTSIDE_INPUT in s and " (symlink to " in s]


def _share(fraction: float | None) -> str:
    return "?" if fraction is None else f"{fraction:.0%}"


def _restored(counts: dict[str, int]) -> str:
    return ", ".join(f"{k} {v}" for k, v in counts.items()) or "none"


def _first(names: list[str], shown: int = 3) -> str:
    return f" ({', '.join(names[:shown])}{' ...' if len(names) > shown else ''})" if names else ""


def _check_out(out: Path, videos_dir: Path, config: BuildConfig, overwrite: bool) -> None:
    if not out.exists():
        return
    if not out.is_dir():
        raise UserError(f"output {out} exists and is not a folder")
    entries = [e for e in out.iterdir() if not e.name.startswith(STAGING_PREFIX) and e.name not in (LOCK_FILE, JOURNAL)]
    if not entries or overwrite:
        return
    manifest_path = out / MANIFEST
    if not manifest_path.is_file():
        raise UserError(f"output {out} is not empty and holds no emer build; choose another --out or pass --overwrite")
    try:
        old = json.loads(manifest_path.read_text())
    except ValueError:
        raise UserError(f"output {out} holds an unreadable manifest; pass --overwrite to replace it") from None
    if old.get("config_hash") != config.config_hash() or old.get("videos_dir") != str(videos_dir):
        raise UserError(f"output {out} holds a different build (other inputs or config); pass --overwrite to replace it")
    broken = verify_build(out, old)
    if broken:
        raise UserError(f"output {out} holds a damaged build ({broken}); pass --overwrite to replace it")


def verify_build(out: Path, manifest: dict[str, Any]) -> str | None:
    """What is wrong with a committed build, checked cheaply (every listed file there, with its size)."""
    for rel, meta in sorted(manifest.get("files", {}).items()):
        path = out / rel
        if not path.is_file():
            return f"{rel} is listed in {MANIFEST} but missing"
        if path.stat().st_size != meta.get("bytes"):
            return f"{rel} has {path.stat().st_size} bytes, {MANIFEST} says {meta.get('bytes')}"
    return None


@contextmanager
def out_lock(out: Path) -> Iterator[None]:
    """One build at a time per OUT: an flock on OUT/.emer-lock (released by the kernel when the
    holder dies, so a killed build never leaves a stale lock). A second build fails at once."""
    created = not out.exists()
    try:
        out.mkdir(parents=True, exist_ok=True)
        fd = os.open(out / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as e:
        raise UserError(f"cannot write to {out}: {e.strerror or e}") from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 400, 0).decode("utf-8", "replace").strip() or "another process"
            raise UserError(f"output {out} is in use by another build ({holder}); wait for it or choose another --out") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()} since {time.strftime('%Y-%m-%d %H:%M:%S')}\n".encode(), 0)
        yield
        os.ftruncate(fd, 0)  # the holder's line goes with the lock
    finally:
        os.close(fd)
        if created and [e.name for e in out.iterdir()] == [LOCK_FILE]:  # a build that failed early leaves no OUT behind
            (out / LOCK_FILE).unlink()
            out.rmdir()


def _remove_stale_staging(out: Path) -> None:
    """Staging folders of earlier builds (we hold the lock, so their process is gone) hold partial output only."""
    if not out.is_dir():
        return
    for entry in out.glob(f"{STAGING_PREFIX}*"):
        shutil.rmtree(entry, ignore_errors=True)  # called after `recover`, so no journal names one


def _discard(staging: Path) -> None:
    """Remove a staging folder that runner threads may still be writing into after an interrupt."""
    for _ in range(50):
        shutil.rmtree(staging, ignore_errors=True)
        if not staging.exists():
            return
        time.sleep(0.1)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


def commit(staging: Path, out: Path, overwrite: bool) -> None:
    """Move a finished staging folder into OUT so that a kill at any instant leaves the old build or
    the new one: a journal naming the staging folder and its outputs is written first (atomically),
    the old manifest goes first, the new manifest last; the next build finishes an interrupted commit
    (`recover`)."""
    journal = {"staging": staging.name, "outputs": [n for n in BUILD_OUTPUTS if (staging / n).exists()], "overwrite": overwrite}
    tmp = out / (JOURNAL + ".tmp")
    tmp.write_text(json.dumps(journal) + "\n")
    os.replace(tmp, out / JOURNAL)
    _finish_commit(out, journal)


def _finish_commit(out: Path, journal: dict[str, Any]) -> None:
    staging = out / journal["staging"]
    if not (staging / MANIFEST).exists():  # the new manifest is in place: only the clean-up was left
        (out / JOURNAL).unlink()
        shutil.rmtree(staging, ignore_errors=True)
        return
    _remove(out / MANIFEST)  # from here on OUT holds no valid old build
    for entry in out.iterdir():
        name = entry.name
        if name in (staging.name, LOCK_FILE, JOURNAL) or name.startswith(STAGING_PREFIX):
            continue
        if name in BUILD_OUTPUTS:
            if name not in journal["outputs"] or (staging / name).exists():  # an old output (a new one not yet moved replaces it)
                _remove(entry)
        elif journal["overwrite"]:
            _remove(entry)
    for name in journal["outputs"]:  # in BUILD_OUTPUTS order: manifest last
        if (staging / name).exists():
            (staging / name).rename(out / name)
    (out / JOURNAL).unlink()
    shutil.rmtree(staging, ignore_errors=True)


def recover(out: Path) -> bool:
    """Finish a commit that a killed build began (its staging folder was complete: the journal is
    written only after the manifest). True when one was finished."""
    path = out / JOURNAL
    if not path.is_file():
        return False
    try:
        journal = json.loads(path.read_text())
    except ValueError:  # killed while writing the journal's temporary file cannot leave this; be safe
        path.unlink()
        return False
    _finish_commit(out, journal)
    return True


def _disk_full(e: BaseException) -> bool:
    return (isinstance(e, OSError) and e.errno == errno.ENOSPC) or "No space left on device" in str(e)


def inputs_fingerprint(config: BuildConfig, stages: list[Stage], inputs: list[VideoInput], tables: list[dict[str, Any]], beam_args: list[str]) -> str:
    """What a build's output depends on, cheaply: config, code (the stages' cache digests), every
    input's path, size and modification time, the annotation tables' checksums."""
    listing: list[tuple[str, int, Any]] = []
    for i in inputs:
        try:
            listing.append((i.source_path, *stamp(i.path)))
        except OSError as e:  # a dangling link: decode reports it
            listing.append((i.source_path, -1, e.errno))
    data = {
        "config": config.config_hash(),
        "stages": chain_digests(stages),
        "inputs": sorted(listing),
        "tables": sorted(t.get("sha256", "") for t in tables),
        "runner": [a for a in beam_args if a.startswith("--runner")],
    }
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode("utf-8", "surrogateescape")).hexdigest()


def up_to_date(out: Path, fingerprint: str) -> BuildSummary | None:
    """The summary of the build already in OUT when nothing it depends on changed (a no-op rebuild
    costs a directory listing, no Beam run); None when it must be rebuilt."""
    try:
        log = json.loads((out / "build.json").read_text())
        manifest = json.loads((out / MANIFEST).read_text())
    except (OSError, ValueError):
        return None
    if log.get("inputs_fingerprint") != fingerprint or verify_build(out, manifest) is not None:
        return None
    summary = summarise(out, manifest["counts"]["inputs"], log.get("skipped_files", manifest.get("skipped_files", [])), 0.0, manifest, {}, {})
    summary.up_to_date = True
    return summary


def summarise(
    out: Path, inputs: int, skipped: list[str], wall_s: float, manifest: dict[str, Any], stage_seconds: dict[str, dict[str, float]], loads: dict[str, int]
) -> BuildSummary:
    stats = manifest["stats"]
    return BuildSummary(
        out=str(out),
        inputs=inputs,
        records_per_split=dict(manifest["splits"]),
        failures_by_stage=dict(manifest["failures_by_stage"]),
        skipped_files=skipped,
        clips_with_faces=stats["clips_with_faces"],
        languages=dict(stats["records_per_language"]),
        audio_hours=round(stats["audio_seconds"] / 3600, 6),
        wall_s=wall_s,
        stage_seconds=stage_seconds,
        model_loads=loads,
        explanation_sources=manifest["stats"]["explanation_sources"],
        annotations=manifest["annotations"],
        emotion_wheel=manifest["emotion_wheel"],
        truncated=list(manifest.get("truncated", [])),  # a build made before the list has none
        manifest=manifest,
    )


def build(videos_dir: str | Path, out: str | Path, config: BuildConfig | None = None, workers: int = 2, beam_args: list[str] | None = None, overwrite: bool = False, show_progress: bool = True) -> BuildSummary:
    """Build a dataset from every video under `videos_dir` into `out`; returns the summary. Either may
    be an object-store URL (s3://bucket/prefix): inputs are fetched one clip at a time by the workers,
    an OUT URL receives the finished build with its manifest written last."""
    config = config or BuildConfig()
    if not is_url(out):
        return _build(videos_dir, Path(out).absolute(), config, workers, beam_args or [], overwrite, show_progress)
    target = StoredOut(str(out))
    with target.lock(), tempfile.TemporaryDirectory(prefix="emer-out-") as local:
        target.prepare(overwrite)

        def current(fingerprint: str) -> BuildSummary | None:
            return None if overwrite else stored_up_to_date(target, fingerprint, config, videos_dir)

        staged = target.staging_url()  # the workers write their shards there, not to this machine
        try:
            summary = _build(videos_dir, Path(local), config, workers, beam_args or [], True, show_progress, current, target.url, staged)
            if not summary.up_to_date:
                target.commit(Path(local), staged)
        finally:
            target.discard(staged)
    summary.out = target.url
    return summary


def stored_up_to_date(target: StoredOut, fingerprint: str, config: BuildConfig, videos_dir: str | Path) -> BuildSummary | None:
    """`up_to_date` for an OUT on an object store; a different or damaged build there needs --overwrite."""
    manifest = target.read_json(MANIFEST)
    if manifest is None:
        return None
    if manifest.get("config_hash") != config.config_hash() or manifest.get("videos_dir") != _videos_label(videos_dir):
        raise UserError(f"output {target.url} holds a different build (other inputs or config); pass --overwrite to replace it")
    broken = target.damage(manifest)
    if broken:
        raise UserError(f"output {target.url} holds a damaged build ({broken}); pass --overwrite to replace it")
    log = target.read_json("build.json") or {}
    if log.get("inputs_fingerprint") != fingerprint:
        return None
    summary = summarise(Path(target.url), manifest["counts"]["inputs"], log.get("skipped_files", []), 0.0, manifest, {}, {})
    summary.up_to_date = True
    return summary


def _videos_label(videos_dir: str | Path) -> str:
    """How the manifest names the input folder: the URL as given, or the absolute path."""
    return str(videos_dir).rstrip("/") if is_url(videos_dir) else str(Path(videos_dir).absolute())


def _build(
    videos_dir: str | Path,
    out_path: Path,
    config: BuildConfig,
    workers: int,
    beam_args: list[str],
    overwrite: bool,
    show_progress: bool,
    current: Callable[[str], BuildSummary | None] | None = None,
    label: str | None = None,
    stored_staging: str | None = None,
) -> BuildSummary:
    """A build into the local folder `out_path`; `current` answers whether the inputs' fingerprint
    matches a build that already exists (by default: the one in `out_path`); `label` names OUT in the
    cache's record of builds (by default `out_path`); `stored_staging` is a URL the workers write their
    files to (an OUT URL's staging prefix)."""
    stored_input = is_url(videos_dir)
    if stored_input:
        videos: Any = _videos_label(videos_dir)
        file_system(videos, "VIDEOS_DIR")
        if config.corpus or config.segment.mode != "none":
            raise UserError(f"segmenting inputs read from {videos} is not supported yet: sync the videos to a folder first (e.g. `aws s3 sync`)")
    else:
        videos = Path(videos_dir).absolute()
        if not videos.exists():
            raise UserError(f"input folder not found: {videos_dir}")
        if not videos.is_dir():
            raise UserError(f"input {videos_dir} is a file, not a folder: give the folder that holds the videos")
        if out_path.resolve() == videos.resolve() or videos.resolve() in out_path.resolve().parents:
            raise UserError("--out must not be inside the input folder (the build would read its own output)")
        if out_path.resolve() in videos.resolve().parents:
            raise UserError("the input folder must not be inside --out (replacing the build could delete the videos)")
    if workers < 1:
        raise UserError("--workers must be at least 1")
    check_options(config.segment)
    config = split_settings(config, config.corpus is not None or config.segment.mode != "none")
    schema = record_schema(config)  # fails early on broken plug-ins
    split = config.split
    SplitAssigner(split.ratios, split.group_by, split.group_pattern, split.split_table, split.seed)
    if split.group_by.split(".")[0] not in schema.column_names():
        raise UserError(f"split.group_by {split.group_by!r} names no record field; fields: {', '.join(schema.column_names())}")
    if out_path.exists() and not out_path.is_dir():
        raise UserError(f"output {out_path} exists and is not a folder")
    plan = prepare(config)  # tables and endpoint first: cheaper than loading the models
    with out_lock(out_path):
        finished_commit = recover(out_path)
        _check_out(out_path, videos, config, overwrite)
        stages = build_stages(config)
        with store_errors(str(videos), "read", STORE_CREDENTIALS) if stored_input else nullcontext():
            inputs, collisions, skipped = match_videos(videos, config.follow_external_links)
        segmentation = segment_inputs(config, videos, inputs)
        if segmentation is not None:
            skipped = sorted((set(skipped) - sidecar_files(inputs)) | set(segmentation.skipped))
        fingerprint = inputs_fingerprint(config, stages, inputs, [*plan.annotations.files, *(segmentation.files if segmentation else [])], beam_args)
        if current is not None:
            known = current(fingerprint)
        else:
            known = up_to_date(out_path, fingerprint) if not overwrite else None
        if known is not None:
            known.finished_commit = finished_commit
            return known
        if not names_runner(beam_args):
            check_stages(config)  # remote workers may differ from this machine: they report their own errors
        prov = provenance(stages, config.config_hash(), describe_sources(plan.sources), plan.wheel.origin() if plan.wheel else None)

        names = join_names(inputs, plan.annotations.names)
        unmatched = plan.annotations.unmatched(set(names.values())) if plan.annotations.names else ([], [])
        early = [
            failure_row(c.key, c.source_path, "match", ClipError(f"key {c.key!r} collides with {', '.join(c.others)}; rename one of the files"))
            for c in collisions
        ]
        clips = input_clips(inputs, early, segmentation)
        if not clips:
            leaving = links_leaving(skipped)
            hint = f"; {len(leaving)} symlinks leading outside it were not followed{_first(leaving)}: set follow_external_links: true in the config to include them" if leaving else ""
            raise UserError(f"no video files under {videos_dir} (looked for {', '.join(sorted(VIDEO_EXTENSIONS))}){hint}")

        # the build proper needs Beam, the models' libraries and `datasets` (about 2 s of imports): a
        # no-op rebuild, and a build that fails its checks, have returned above without them
        from emer_builder.pipelines.run import GraphJob, produce

        _remove_stale_staging(out_path)
        staging = out_path / f"{STAGING_PREFIX}{os.getpid()}"
        try:
            for sub in ("data", "media", ".media", ".progress", ".shards"):
                (staging / sub).mkdir(parents=True)
        except OSError as e:
            raise UserError(f"cannot write to {out_path}: {e.strerror or e}") from None
        try:
            job = GraphJob(clips, config, schema, stages, prov, plan, names, segmentation.split_table if segmentation else None)
            manifest, wall, seconds, loads, counts = produce(
                job, staging, workers, beam_args, segmentation,
                videos=videos, skipped=skipped, unmatched=unmatched, fingerprint=fingerprint, show_progress=show_progress, label=label or str(out_path),
                stored_staging=stored_staging,
            )
            commit(staging, out_path, overwrite)
        except BaseException as e:
            if isinstance(e, KeyboardInterrupt):
                threading.excepthook = lambda args: None  # Beam's runner threads die loudly after an interrupt
            if not (out_path / JOURNAL).is_file():
                _discard(staging)
            if _disk_full(e):
                raise UserError(f"no space left on the device of {out_path} ({shutil.disk_usage(out_path).free // 2**20} MiB free); free space or choose another --out (nothing was committed)") from None
            fault = fault_in(e) if isinstance(e, Exception) else None
            if fault:  # a worker's BuildFault, as the runner re-raised it
                raise BuildFailed(fault) from None
            raise
    logging.getLogger(__name__).info("build finished")
    summary = summarise(out_path, len(clips), skipped, wall, manifest, seconds, loads)
    summary.llm = {k.removeprefix("llm_"): v for k, v in counts.items() if k.startswith("llm_")} if plan.llm is not None else {}
    summary.stage_runs = {s.name: counts.get(f"ran_{s.name}", 0) for s in stages}
    summary.finished_commit = finished_commit
    if segmentation is not None:
        summary.segmentation = {
            "method": f"corpus {config.corpus}" if config.corpus else config.segment.mode,
            "utterances": len(segmentation.segments),
            "videos": len({s.source_key for s in segmentation.segments}),
            "failures": len(segmentation.failures),
            "rows_without_video": segmentation.unmatched,
        }
    summary.cache_restored = {k.removeprefix("restored_"): v for k, v in counts.items() if k.startswith("restored_")}
    return summary
