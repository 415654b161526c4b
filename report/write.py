"""`write_report`: OUT/report.html plus its files in OUT/report/, from what the build folder holds."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

from emer_builder.core.errors import UserError, one_line
from emer_builder.core.urls import local_copy
from emer_builder.report.collect import BuildData, load_build, samples, shard_stem, shards
from emer_builder.report.media import SampleMedia, write_sample
from emer_builder.report.page import render_page
from emer_builder.report.plots import draw_plots

MARKER = "README.txt"  # marks a folder as the report's own: only such a folder is ever replaced
MARKER_TEXT = "Files of the report beside this folder (face-crop strips, audio, plots), written by `emer report`; replaced on every run.\n"


def write_report(
    build_dir: str | os.PathLike[str], to: str | os.PathLike[str] | None = None, *, audio: bool = True, manifest: dict[str, Any] | None = None, media_from: str | None = None
) -> Path:
    """Write the HTML report of a build (or a downloaded release) and return its path.

    `to` defaults to `build_dir/report.html`; its files go to the folder of the same name without `.html`
    (`report/`), referenced relatively, so the page opens offline from anywhere the two are copied together.
    Reads only the build folder (manifest.json, build.json, data/, media/, failures.parquet): no Beam, no models.
    The same build gives byte-identical files. `audio=False` leaves the FLAC copies out (the report then holds
    no audio players; each record's FLAC is about as large as its face crops). `manifest` is the build's
    manifest when the caller has it in hand (the build does). `media_from` is a URL that holds the tar shards
    listed in the manifest instead of `build_dir` (a build whose workers wrote them to an object store):
    each is fetched to a temporary file in turn.
    """
    root = Path(build_dir)
    if not root.is_dir():
        raise UserError(f"build folder not found: {root}")
    target = Path(to) if to is not None else root / "report.html"
    if target.suffix.lower() not in (".html", ".htm"):
        raise UserError(f"the report is an HTML file: give --to a name ending in .html, not {target}")
    for folder in ("data", "media"):
        if (root / folder).resolve() in (target.parent.resolve(), *target.parent.resolve().parents):
            raise UserError(f"refusing to write the report inside {root / folder}: datasets read every file there")
    assets = target.with_suffix("")
    if assets.exists() and not (assets / MARKER).is_file():
        raise UserError(f"{assets} exists and was not written by `emer report`: the report's files would replace it; choose another --to")
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = target.parent / f".{assets.name}.tmp-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    try:
        data = load_build(root, manifest, media_from)
        (staging / MARKER).write_text(MARKER_TEXT)
        media, notes = _media(data, staging, assets.name, audio, media_from)
        plots = draw_plots(data.tally, data.splits, data.failure_tally.count, staging, assets.name)
        page = render_page(data, media, plots, notes)
        if assets.exists():
            shutil.rmtree(assets)
        staging.rename(assets)
    except (TypeError, ValueError, KeyError, AttributeError, IndexError) as e:  # a folder from elsewhere (a release edited by hand)
        shutil.rmtree(staging, ignore_errors=True)
        raise UserError(f"{root}: its manifest.json or tables hold values `emer build` does not write, so no report ({type(e).__name__}: {one_line(e)})") from None
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    partial = target.with_name(f".{target.name}.tmp-{os.getpid()}")
    partial.write_text(page, encoding="utf-8")
    os.replace(partial, target)
    return target


def _media(data: BuildData, staging: Path, name: str, audio: bool, media_from: str | None = None) -> tuple[dict[str, SampleMedia], list[str]]:
    """Strips and audio of the gallery's records, from the tar shards that hold them (only those are opened).
    Returns what each key got and notes on what this folder lacks and what the gallery samples."""
    wanted: dict[str, set[str]] = {}
    for key, shard in data.tally.shard_of.items():
        wanted.setdefault(shard, set()).add(key)
    found = shards(data.root, data.manifest, media_from)
    media: dict[str, SampleMedia] = {}
    for split, where in found:
        keys = wanted.get(shard_stem(where))
        if not keys:
            continue
        with local_copy(str(where)) as local:
            for key, members in samples(split, Path(local), data.manifest, keys=keys, known=data.keys_of(split)):
                media[key] = write_sample(key, members, staging, name, audio)
    return media, _notes(data, {split for split, _ in found})


def _notes(data: BuildData, with_shards: set[str]) -> list[str]:
    notes = []
    expected = data.manifest.get("splits") or {}
    present = {s: data.tally.splits[s].records if s in data.tally.splits else 0 for s in expected}
    for split, n in expected.items():
        if present[split] < n:
            notes.append(f"split {split}: {present[split]} of {n} records present in this folder (a partial download?); the others are not shown")
        elif split not in data.with_table:
            notes.append(f"split {split}: no Parquet table here; records read from the tar shards' json")
        if split not in with_shards and n:
            notes.append(f"split {split}: no tar shards here, so no face crops or audio in the gallery (`emer download --config media` fetches them)")
    if (data.manifest.get("counts") or {}).get("failures") and not data.failure_tally.count:
        notes.append("failures.parquet is not in this folder: the failures are counted but not listed")
    for split in data.splits:
        sample = data.tally.gallery.get(split)
        if sample is not None and (sample.sampled or data.tally.splits[split].records > sample.offered):
            chosen, total = data.gallery_shards.get(split, (0, 0))
            notes.append(
                f"split {split}: the gallery shows {len(sample.items())} of its {data.tally.splits[split].records} records, chosen by key hash from {chosen} of its {total} shards"
                " (the same build shows the same ones); the tables and plots count every record"
            )
    failures = data.failure_tally
    if failures.gallery.sampled:
        notes.append(f"the gallery shows {len(data.failures)} of the {failures.count} failure rows, chosen by key hash; the tables count every row and failures.parquet lists them all")
    return notes
