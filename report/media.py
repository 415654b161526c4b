"""The gallery's files: one strip of face crops per record (a single small JPEG, so a page of cards loads a few
images, not hundreds) and the record's FLAC, written beside the report and referenced relatively."""

from __future__ import annotations

import io
import re
from dataclasses import dataclass
from pathlib import Path

STRIP_CROPS = 8  # crops shown per record, evenly spaced over the main face's track
THUMB = 72  # side of one crop in the strip, pixels
MAX_CROP_SIDE = 4096  # a crop larger than this is not decoded (the builder writes 224x224)
FACE = re.compile(r"face_(\d{3,})\.jpg")


@dataclass(frozen=True)
class SampleMedia:
    """What the gallery shows for one record: a strip (path relative to the report) and its crop count, the audio."""

    strip: str | None
    crops_shown: int
    crops: int
    audio: str | None


def write_sample(key: str, members: dict[str, bytes], folder: Path, href: str, audio: bool) -> SampleMedia:
    """Strip and audio of one sample into `folder/crops/{key}.jpg` and `folder/audio/{key}.flac`, linked as `href/...`.

    `key` comes from a shard that `collect.samples` checked (letters, digits, `_`, `-`): a safe file name."""
    faces = sorted((int(m.group(1)), data) for suffix, data in members.items() if (m := FACE.fullmatch(suffix)))
    chosen = _spread([data for _, data in faces], STRIP_CROPS)
    strip, shown = None, 0
    if chosen:
        image, shown = _strip(chosen)
        if image is not None:
            (folder / "crops").mkdir(exist_ok=True)
            (folder / "crops" / f"{key}.jpg").write_bytes(image)
            strip = f"{href}/crops/{key}.jpg"
    sound = None
    if audio and members.get("flac"):
        (folder / "audio").mkdir(exist_ok=True)
        (folder / "audio" / f"{key}.flac").write_bytes(members["flac"])
        sound = f"{href}/audio/{key}.flac"
    return SampleMedia(strip, shown, len(faces), sound)


def _spread(items: list[bytes], n: int) -> list[bytes]:
    """At most `n` items, evenly spaced, first and last included."""
    if len(items) <= n:
        return items
    return [items[round(i * (len(items) - 1) / (n - 1))] for i in range(n)]


def _strip(crops: list[bytes]) -> tuple[bytes | None, int]:
    """The crops side by side as one JPEG and how many it holds; crops that do not decode are left out."""
    from PIL import Image

    thumbs = []
    for data in crops:
        try:
            with Image.open(io.BytesIO(data)) as im:
                if im.format != "JPEG" or max(im.size) > MAX_CROP_SIDE:
                    continue
                im.draft("RGB", (THUMB, THUMB))  # let the JPEG decoder scale down (224 -> 112): a few times faster
                thumbs.append(im.convert("RGB").resize((THUMB, THUMB), Image.Resampling.BILINEAR))
        except (OSError, ValueError, Image.DecompressionBombError):
            continue
    if not thumbs:
        return None, 0
    strip = Image.new("RGB", (THUMB * len(thumbs), THUMB), (255, 255, 255))
    for i, thumb in enumerate(thumbs):
        strip.paste(thumb, (i * THUMB, 0))
    out = io.BytesIO()
    strip.save(out, format="JPEG", quality=82)
    return out.getvalue(), len(thumbs)
