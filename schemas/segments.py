"""Field groups of utterances cut from longer videos, and of the labels a corpus brings with them.

`segment`: where an utterance lies in its source video and what was said around it (the dialogue
history EMER's lexical clue reasons over); null for inputs where one file is one record.
`labels`: what a corpus or a segment table says about the utterance (MELD's emotion and sentiment,
CH-SIMS' per-modality scores, CMU-MOSEI's emotion intensities); a field the corpus does not have is null.

Both are added to the record schema by `schemas/v1.py` (minor version bump: only fields are added).
"""

from __future__ import annotations

import pyarrow as pa
from emer_builder.schemas.fields import Field, FieldGroup, list_of


def _context(name: str, doc: str) -> Field:
    return list_of(
        name,
        doc,
        [
            Field("speaker", pa.string(), "speaker of that utterance when known, else null"),
            Field("text", pa.string(), "what was said (cue or table text), null when unknown"),
            Field("start_s", pa.float64(), "its start in the source video, seconds"),
            Field("end_s", pa.float64(), "its end in the source video, seconds"),
        ],
    )


SEGMENT = FieldGroup(
    "segment",
    "Where the utterance lies in its source video and its dialogue context; null when one file is one record.",
    (
        Field("method", pa.string(), "how the utterance was cut: `subtitles`, `table`, `speech`, or `corpus:<name>` for a corpus adapter"),
        Field(
            "source_key",
            pa.string(),
            "key of the source video; for corpora whose clips come already cut, the corpus' own name of the source (MELD: `S04E07`)",
        ),
        Field("start_s", pa.float64(), "start of the utterance in the source video, seconds"),
        Field("end_s", pa.float64(), "end of the utterance in the source video, seconds"),
        Field("index", pa.int32(), "0-based position of the utterance in its dialogue (time order; MELD: Utterance_ID)"),
        Field("id", pa.string(), "the segment table's or corpus' own id of the utterance (MELD `dia0_utt0`); null when the key was made from the times"),
        Field("speaker", pa.string(), "speaker, when the table, the subtitle (ASS `Name`) or the corpus gives one; else null"),
        Field("text", pa.string(), "the subtitle cue(s) or the table's text; null for speech segmentation (the transcript group holds what Whisper heard)"),
        Field(
            "dialogue",
            pa.string(),
            "the dialogue the utterance belongs to: the table's dialogue column (MELD: `<split>_dia<Dialogue_ID>`), else the source video key; "
            "`index` and the context are counted within it",
        ),
        Field(
            "group",
            pa.string(),
            "what keeps utterances together in one split (`split.group_by: segment.group`): the table's group column when set "
            "(segment.group_column), else the dialogue column, else the source video key",
        ),
        _context("context_before", "up to segment.context_before utterances before this one in its dialogue, oldest first"),
        _context("context_after", "up to segment.context_after utterances after this one in its dialogue, in order"),
    ),
)

LABELS = FieldGroup(
    "labels",
    "Labels the corpus or segment table gives for the utterance, as it gives them; null fields where it gives none.",
    (
        Field(
            "corpus",
            pa.string(),
            # the names are the corpus registry's (transforms/corpora), a layer above the schema: named there, not restated here
            "what read them: the name of the corpus adapter (`--corpus NAME`; README, \"Corpus adapters\", lists them) or `table` (a segment table)",
        ),
        Field("sample_id", pa.string(), "the corpus' own id of the sample (MELD `dia0_utt0`, MMSA `<video_id>_<clip_id>`, CMU SDK `<video>_<n>`)"),
        Field(
            "official_split", pa.string(), "the corpus' own split name as written (MELD train/dev/test, MMSA train/valid/test); the record's `split` maps it"
        ),
        Field(
            "emotion",
            pa.string(),
            "one discrete emotion as the corpus names it (MELD: anger, disgust, fear, joy, neutral, sadness, surprise; MER: its discrete label)",
        ),
        Field("sentiment", pa.string(), "sentiment polarity as given, lowercased: `positive`, `negative`, `neutral` (MELD Sentiment, MMSA annotation)"),
        Field(
            "sentiment_score",
            pa.float32(),
            "overall sentiment score on the scale [score_min, score_max] (CH-SIMS, CH-SIMS v2: -1 to 1; CMU-MOSI, CMU-MOSEI: -3 to 3; MER valence: -5 to 5)",
        ),
        Field("score_min", pa.float32(), "lowest value of the corpus' score scale, null when unknown"),
        Field("score_max", pa.float32(), "highest value of the corpus' score scale, null when unknown"),
        Field("text_score", pa.float32(), "sentiment judged from the text alone (CH-SIMS `label_T`), same scale"),
        Field("audio_score", pa.float32(), "sentiment judged from the audio alone (CH-SIMS `label_A`), same scale"),
        Field("visual_score", pa.float32(), "sentiment judged from the video alone (CH-SIMS `label_V`), same scale"),
        list_of(
            "emotion_scores",
            "intensity per emotion (CMU-MOSEI: happy, sad, anger, surprise, disgust, fear, each 0 to 3); empty when the corpus has none",
            [Field("emotion", pa.string(), "emotion name"), Field("score", pa.float32(), "its intensity")],
        ),
        Field("labels", pa.list_(pa.string()), "labels listed in a segment table's `labels` column, order kept; empty when none"),
    ),
)

GROUPS: tuple[FieldGroup, ...] = (SEGMENT, LABELS)

__all__ = ["GROUPS", "LABELS", "SEGMENT"]
