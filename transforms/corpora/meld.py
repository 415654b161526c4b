"""MELD (Poria et al., 2019): Friends dialogues, one row per utterance, in `{train,dev,test}_sent_emo.csv`.

Rows carry Dialogue_ID and Utterance_ID (ids restart in each split), the speaker, the utterance
text, a 7-class Emotion and a 3-class Sentiment, and StartTime / EndTime inside the episode
(Season, Episode), written `00:20:57,256` or `0:20:57,256`. The tables are CRLF with curly quotes,
some utterances overlap and some repeat the same times: each row stays its own record.

Clips: MELD.Raw's `dia{D}_utt{U}.mp4` in a folder naming the split (`train_splits`,
`dev_splits_complete`, `output_repeated_splits_test`), decoded whole; or, for rows without a clip,
the raw episode (a file whose name holds `S04E07` or `4x07`) cut at the row's times.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import PurePosixPath
from typing import Any

from emer_builder.core.errors import UserError
from emer_builder.core.tables import read_table
from emer_builder.transforms.corpora.base import CorpusAdapter
from emer_builder.transforms.corpora.common import by_stem, find_tables, split_name, text
from emer_builder.transforms.keys import VideoInput, display_path, key_for
from emer_builder.transforms.segment import Utterance, corpus_labels, parse_time

NAME = "meld"
SPLITS: tuple[str, ...] = ("train", "dev", "test")  # as MELD names them; the build calls dev `validation`
FILES: tuple[str, ...] = tuple(f"{s}_sent_emo.csv" for s in SPLITS)
COLUMNS: tuple[str, ...] = ("Utterance", "Speaker", "Emotion", "Sentiment", "Dialogue_ID", "Utterance_ID", "Season", "Episode", "StartTime", "EndTime")
CLIP_NAME = re.compile(r"dia(\d+)_utt(\d+)")
SPLIT_IN_FOLDER = re.compile(r"(?:^|[_\-. ])(train|dev|test)(?:$|[_\-. ])", re.IGNORECASE)
NO_VIDEO = VideoInput("", "", "")  # stands in for the video of a row kept only as context
EPISODE_IN_NAME = re.compile(r"(?:s(\d{1,2})[ ._-]?e(\d{1,3}))|(?:(?<!\d)(\d{1,2})x(\d{2,3})(?!\d))", re.IGNORECASE)


def sample_id(row: dict[str, Any]) -> str:
    """MELD's own name of the utterance (and of its clip file): `dia{Dialogue_ID}_utt{Utterance_ID}`."""
    return f"dia{int(row['Dialogue_ID'])}_utt{int(row['Utterance_ID'])}"


def key(split: str, row: dict[str, Any]) -> str:
    """`{split}__dia{D}_utt{U}`: MELD's ids restart in each split; the last `__` part is what `emer evaluate` matches."""
    return key_for(f"{split}/{sample_id(row)}")


def labels(split: str, row: dict[str, Any]) -> dict[str, Any]:
    """Emotion (anger, disgust, fear, joy, neutral, sadness, surprise) and Sentiment (positive, negative, neutral), as written."""
    sentiment = text(row.get("Sentiment"))
    return {
        "corpus": NAME,
        "sample_id": sample_id(row),
        "official_split": split,
        "emotion": text(row.get("Emotion")),
        "sentiment": sentiment.lower() if sentiment else None,
    }


def split(table_split: str) -> str:
    """The table a row comes from is its split: train, dev (-> validation), test."""
    return split_name(table_split) or table_split


def episode_name(row: dict[str, Any]) -> str:
    return f"S{int(row['Season']):02d}E{int(row['Episode']):02d}"


def _clip_split(source_path: str) -> str | None:
    """The split a clip belongs to, from the folders above it (`train_splits`, `output_repeated_splits_test`)."""
    for part in reversed(PurePosixPath(source_path).parts[:-1]):
        m = SPLIT_IN_FOLDER.search(part)
        if m:
            return m.group(1).lower()
    return None


def _index(videos: list[VideoInput]) -> tuple[dict[tuple[str, str], VideoInput], dict[str, VideoInput], list[str]]:
    """Clips by (split, `diaD_uttU`), episodes by `S04E07`, and problems (duplicates, clips in no split folder)."""
    clips: dict[tuple[str, str], VideoInput] = {}
    episodes: dict[str, list[VideoInput]] = {}
    problems = []
    for stem, found in sorted(by_stem(videos).items()):
        m = CLIP_NAME.fullmatch(stem)
        if m:
            for v in found:
                where = _clip_split(v.source_path)
                if where is None:
                    problems.append(f"{v.source_path} (no train, dev or test folder above it: its split is unknown)")
                elif (where, stem) in clips:
                    problems.append(f"{v.source_path} (a second clip {where}/{stem}; {clips[(where, stem)].source_path} is used)")
                else:
                    clips[(where, stem)] = v
            continue
        for v in found:
            e = EPISODE_IN_NAME.search(stem)
            if e:
                season, episode = (e.group(1), e.group(2)) if e.group(1) else (e.group(3), e.group(4))
                episodes.setdefault(f"S{int(season):02d}E{int(episode):02d}", []).append(v)
    single = {}
    for name, found in episodes.items():
        if len(found) > 1:
            problems.append(f"{', '.join(v.source_path for v in found)} (all name episode {name}: none is used)")
        else:
            single[name] = found[0]
    return clips, single, problems


def _times(row: dict[str, Any]) -> tuple[float | None, float | None, str | None]:
    try:
        return parse_time(text(row.get("StartTime"))), parse_time(text(row.get("EndTime"))), None
    except ValueError as e:
        return None, None, str(e)


class Meld(CorpusAdapter):
    """MELD.Raw's layout: the three split tables, clips in split folders, raw episodes for rows without a clip."""

    name = NAME
    description = "MELD: Friends dialogues with emotion and sentiment per utterance"
    files = FILES
    columns = COLUMNS
    clips = (
        "dia{D}_utt{U}.mp4 under a folder naming its split (train_splits, dev_splits_complete, output_repeated_splits_test); "
        "else the raw episode (a file named with S04E07 or 4x07) cut at StartTime-EndTime"
    )
    key_rule = "{split}__dia{D}_utt{U} (train, dev, test: ids restart in each split)"
    label_mapping = "labels.emotion = Emotion, labels.sentiment = Sentiment (lowercased), segment.speaker = Speaker, segment.text = Utterance"
    split_rule = "the table a row comes from: train -> train, dev -> validation, test -> test (the split table); dialogues keep together"

    def utterances(self) -> Iterator[Utterance]:
        """Every row of the split tables found under ROOT: its clip when there is one, else its episode cut at
        the row's times; a row with neither stays in its dialogue's context and is listed as unmatched."""
        root = self.root
        tables = [(s, find_tables(root, f"{s}_sent_emo.csv")) for s in SPLITS]
        for s, found in tables:
            if len(found) > 1:
                raise UserError(f"corpus meld: {len(found)} files named {s}_sent_emo.csv under {root}; keep one")
        tables = [(s, found[0]) for s, found in tables if found]
        if not tables:
            raise UserError(f"corpus meld: no {', '.join(FILES)} under {root}")
        clips, episodes, problems = _index(self.videos)
        for problem in problems:
            self.skip(problem)
        for table_split, path in tables:
            table = read_table(path, what="MELD table")
            missing = [c for c in COLUMNS if table.column(c.lower()) is None]
            if missing:
                raise UserError(f"MELD table {path}: no column {', '.join(missing)}; MELD's tables have {', '.join(COLUMNS)}")
            self.read_table(path, len(table.rows))
            name = display_path(path.name)
            for line, raw in table.numbered():
                row = {c: raw.get(table.column(c.lower()) or c) for c in COLUMNS}
                where = f"{name} line {line}"
                try:
                    sid, record_key, episode = sample_id(row), key(table_split, row), episode_name(row)
                except (TypeError, ValueError):
                    raise UserError(f"{where}: Dialogue_ID, Utterance_ID, Season and Episode must be whole numbers") from None
                start, end, problem = _times(row)
                problem = f"{where}: {problem}" if problem else None
                clip = clips.get((table_split, sid))
                source = clip or episodes.get(episode)
                if source is None:
                    self.unmatch(f"{where}: no clip {table_split}/{sid}.mp4 and no episode {episode} under the corpus folder")
                else:
                    self.use(source)
                yield Utterance(
                    source or NO_VIDEO,
                    start,
                    end,
                    where,
                    id=sid,
                    key=record_key,
                    speaker=text(row.get("Speaker")),
                    text=text(row.get("Utterance")),
                    dialogue=f"{table_split}_dia{int(row['Dialogue_ID'])}",
                    order=(int(row["Utterance_ID"]),),
                    labels=corpus_labels(**labels(table_split, row)),
                    split=split(table_split),
                    seek=clip is None,
                    source_key=episode if clip is not None else None,
                    line=line,
                    problem=problem if clip is None else None,  # a clip is decoded whole: a bad time only leaves its times null
                    record=source is not None,  # a row without a video still belongs to its dialogue's context
                )
