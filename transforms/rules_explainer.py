"""The `rules` explainer: EMER-style clues written from what the build measured, offline and deterministic.

- acoustic clue: pitch level and variability, loudness, speech rate and voice quality, each placed
  against the other clips of the same build (midrank percentile), because "high pitch" only means
  something relative to a corpus;
- visual clue: the main face's expression over the beginning, middle and end of the clip, and how
  often a face is visible (identity is never described);
- lexical clue: the subtitle or transcript scored with the NRC Emotion Lexicon (the `nrclex` package);
- multimodal explanation: which clue supports which emotion, and the candidate labels that follow.

Every sentence is backed by rows in `evidence` (measure path, value, corpus percentile), so a reader
can trace each claim to a number in the same record.
"""

from __future__ import annotations

import bisect
import re
from array import array
from dataclasses import dataclass, field
from typing import Any

from emer_builder.transforms.explanation import FieldValue, Unavailable

RULES_VERSION = "1"
SOURCE = f"rules:{RULES_VERSION}"

# Measures placed against the corpus: name -> record path (inside the field groups).
CORPUS_MEASURES: dict[str, tuple[str, ...]] = {
    "acoustics.prosody.f0_mean_semitone": ("acoustics", "prosody", "f0_mean_semitone"),
    "acoustics.prosody.f0_std_semitone": ("acoustics", "prosody", "f0_std_semitone"),
    "acoustics.prosody.loudness_mean": ("acoustics", "prosody", "loudness_mean"),
    "acoustics.prosody.speech_rate_wps": ("acoustics", "prosody", "speech_rate_wps"),
    "acoustics.egemaps.jitterLocal_sma3nz_amean": ("acoustics", "egemaps", "jitterLocal_sma3nz_amean"),
    "acoustics.egemaps.shimmerLocaldB_sma3nz_amean": ("acoustics", "egemaps", "shimmerLocaldB_sma3nz_amean"),
    "acoustics.egemaps.HNRdBACF_sma3nz_amean": ("acoustics", "egemaps", "HNRdBACF_sma3nz_amean"),
}
LOW, HIGH = 25.0, 75.0  # percentile bounds of "low" and "high" against the corpus
CLEAR_EXPRESSION = 0.4  # mean probability above which an expression is stated
LEXICON_EMOTIONS = ("anger", "anticipation", "disgust", "fear", "joy", "sadness", "surprise", "trust")

EXPRESSION_PHRASES = {
    "happy": "smiles and looks happy",
    "sad": "looks sad, with a downcast expression",
    "angry": "frowns and looks angry",
    "surprise": "looks surprised, eyes and mouth open",
    "fear": "looks tense and afraid",
    "disgust": "shows a look of distaste",
    "neutral": "keeps a calm, neutral expression",
}
EXPRESSION_LABELS = {"happy": "happy", "sad": "sad", "angry": "angry", "surprise": "surprised", "fear": "fearful", "disgust": "disgusted", "neutral": "calm"}
LEXICON_LABELS = {
    "anger": "angry",
    "anticipation": "expectant",
    "disgust": "disgusted",
    "fear": "worried",
    "joy": "joyful",
    "sadness": "sad",
    "surprise": "surprised",
    "trust": "trusting",
}
HIGH_AROUSAL = {"happy", "angry", "surprise", "fear", "joy", "anger", "anticipation"}
LOW_AROUSAL = {"sad", "neutral", "sadness"}
ENERGETIC_LABELS = {"excited", "angry", "surprised", "fearful", "happy", "joyful"}
NOUNS = {
    "happy": "happiness",
    "excited": "excitement",
    "calm": "calm",
    "sad": "sadness",
    "angry": "anger",
    "surprised": "surprise",
    "fearful": "fear",
    "disgusted": "disgust",
    "worried": "worry",
    "expectant": "anticipation",
    "joyful": "joy",
    "trusting": "trust",
}


def measures_of(fields: dict[str, Any]) -> dict[str, float]:
    """The corpus measures present in one clip's field groups. NaN is no measurement (as None): it has
    no place among the corpus' values, and a NaN in a sort leaves the values around it unsorted."""
    found = {}
    for name, path in CORPUS_MEASURES.items():
        value: Any = fields
        for part in path:
            value = value.get(part) if isinstance(value, dict) else None
        if isinstance(value, (int, float)) and value == value:
            found[name] = float(value)
    return found


MeasureRow = tuple[float | None, ...]  # one clip's CORPUS_MEASURES in their order, None where absent


def measure_row(fields: dict[str, Any]) -> MeasureRow:
    """`measures_of` as a few floats: what a grouping over every clip of a corpus holds per clip (a
    dict would repeat the seven names in each)."""
    found = measures_of(fields)
    return tuple(found.get(name) for name in CORPUS_MEASURES)


@dataclass(frozen=True)
class CorpusStats:
    """Sorted values of each measure over the build's clips: percentiles independent of clip order."""

    values: dict[str, tuple[float, ...]] = field(default_factory=dict)

    @classmethod
    def from_measures(cls, rows: list[dict[str, float]]) -> CorpusStats:
        """From `measures_of` dicts (a NaN given here is left out, as `measures_of` leaves it out)."""
        names = sorted({n for r in rows for n, v in r.items() if v == v})
        return cls({n: tuple(sorted(r[n] for r in rows if n in r and r[n] == r[n])) for n in names})

    @classmethod
    def from_rows(cls, rows: list[MeasureRow]) -> CorpusStats:
        """From `measure_row`s: the same statistics as `from_measures` of the same clips."""
        columns = {name: [v for row in rows if (v := row[i]) is not None and v == v] for i, name in enumerate(CORPUS_MEASURES)}
        return cls({n: tuple(sorted(v)) for n, v in sorted(columns.items()) if v})

    def percentile(self, measure: str, value: float) -> float | None:
        """Midrank percentile: the share of clips below, counting ties as half (a lone clip is 50);
        None for a NaN, which is no measurement."""
        ordered = self.values.get(measure, ())
        if not ordered or value != value:
            return None
        below = bisect.bisect_left(ordered, value)
        ties = bisect.bisect_right(ordered, value) - below
        return round(100.0 * (below + 0.5 * ties) / len(ordered), 1)

    def clips(self, measure: str) -> int:
        return len(self.values.get(measure, ()))

    def placed(self, rows: list[MeasureRow]) -> PlacedValues:
        """The answers for the measures of some clips only: what a batch of clips needs, in a size that
        grows with the batch, where these statistics grow with the corpus."""
        values: dict[str, array[float]] = {}
        percentiles: dict[str, array[float]] = {}
        for i, measure in enumerate(CORPUS_MEASURES):
            # 0.0 and -0.0 are one: a percentile does not tell them apart
            ordered = sorted({v for row in rows if (v := row[i]) is not None and v == v})
            if ordered:
                values[measure] = array("d", ordered)
                percentiles[measure] = array("d", [self.percentile(measure, v) for v in ordered])
        return PlacedValues(values, percentiles, {n: len(v) for n, v in self.values.items()})


@dataclass(frozen=True)
class PlacedValues:
    """Corpus percentiles of given values and the corpus' counts, in arrays (a batch's share of a
    corpus-wide grouping): answers the rules explainer's questions about those values as the
    CorpusStats they came from would."""

    values: dict[str, array[float]] = field(default_factory=dict)  # per measure: the values placed, sorted
    percentiles: dict[str, array[float]] = field(default_factory=dict)  # their corpus percentiles, in that order
    counts: dict[str, int] = field(default_factory=dict)

    def percentile(self, measure: str, value: float) -> float | None:
        if not self.counts.get(measure) or value != value:
            return None  # no clip has the measure, or a NaN (no measurement)
        ordered = self.values[measure]  # a value not placed is a bug: no silent None
        at = bisect.bisect_left(ordered, value)
        if at == len(ordered) or ordered[at] != value:
            raise KeyError(f"{measure}={value!r} was not placed")
        return self.percentiles[measure][at]

    def clips(self, measure: str) -> int:
        return self.counts.get(measure, 0)


@dataclass
class _Sentence:
    text: str
    evidence: list[tuple[str, float, float | None]]  # (measure, value, corpus percentile)


@dataclass
class _Analysis:
    sentences: list[_Sentence]
    emotions: dict[str, float]  # emotion word -> strength 0..1 this clue gives it
    arousal: str | None = None  # "high" / "low" / None


def _level(p: float | None) -> str:
    if p is None:
        return "typical"
    return "low" if p < LOW else "high" if p > HIGH else "typical"


class RulesExplainer:
    """Deterministic describer; needs the build's corpus statistics for relative statements."""

    source_name = "rules"

    def __init__(self, corpus: CorpusStats | PlacedValues, language: str = "en"):
        self.corpus = corpus
        self.language = language  # the rules write English; recorded on every value

    def explain(self, field_name: str, item: Any) -> FieldValue | Unavailable:
        analyse = {"visual_clue": self.visual, "acoustic_clue": self.acoustic, "lexical_clue": self.lexical}
        if field_name in analyse:
            result = analyse[field_name](item)
            return result if isinstance(result, Unavailable) else self._value(field_name, result.sentences)
        if field_name == "multimodal_explanation":
            return self._value(field_name, self.merge(item)[0])
        if field_name == "open_vocab_labels":
            sentences, labels = self.merge(item)
            return FieldValue(labels, "en", SOURCE, RULES_VERSION, None, [_row(field_name, s.text, *e) for s in sentences for e in s.evidence])
        return Unavailable(f"rules do not give {field_name}")

    def _value(self, field_name: str, sentences: list[_Sentence]) -> FieldValue:
        text = " ".join(s.text for s in sentences)
        evidence = [_row(field_name, s.text, *e) for s in sentences for e in s.evidence]
        return FieldValue(text, "en", SOURCE, RULES_VERSION, None, evidence)

    # -- acoustic ---------------------------------------------------------------------------
    def acoustic(self, item: Any) -> _Analysis | Unavailable:
        acoustics = item.fields.get("acoustics") or {}
        if acoustics.get("reason"):
            return Unavailable(f"no acoustic measures: {acoustics['reason']}")
        m = measures_of(item.fields)
        prosody = acoustics.get("prosody") or {}
        voiced = prosody.get("voiced_ratio")
        if "acoustics.prosody.f0_mean_semitone" not in m:
            return _Analysis([_Sentence("In the audio, no voiced speech can be heard, so the voice gives no clue.", [("acoustics.prosody.voiced_ratio", voiced or 0.0, None)])], {})
        pct = {name: self.corpus.percentile(name, value) for name, value in m.items()}
        n = self.corpus.clips("acoustics.prosody.f0_mean_semitone")
        pitch, spread = _level(pct["acoustics.prosody.f0_mean_semitone"]), _level(pct.get("acoustics.prosody.f0_std_semitone"))
        pitch_words = {"high": "high-pitched", "low": "low-pitched", "typical": "of ordinary pitch"}[pitch]
        spread_words = {"high": "rises and falls a lot", "low": "stays flat and even", "typical": "varies moderately"}[spread]
        against = f"compared with the other {n - 1} clips" if n > 1 else "as far as one clip can show"
        sentences = [_Sentence(f"In the audio, the voice is {pitch_words} and {spread_words}, {against}.", self._ev(m, pct, "f0_mean_semitone", "f0_std_semitone"))]
        loud = _level(pct.get("acoustics.prosody.loudness_mean"))
        sentences.append(
            _Sentence({"high": "The speaker talks loudly.", "low": "The speaker talks softly.", "typical": "The volume is moderate."}[loud], self._ev(m, pct, "loudness_mean"))
        )
        rate = None
        if "acoustics.prosody.speech_rate_wps" in m:
            rate = _level(pct["acoustics.prosody.speech_rate_wps"])
            sentences.append(
                _Sentence(
                    {"high": "The speech is fast.", "low": "The speech is slow and unhurried.", "typical": "The speaking pace is ordinary."}[rate],
                    self._ev(m, pct, "speech_rate_wps"),
                )
            )
        quality = self._voice_quality(m, pct)
        if quality:
            sentences.append(quality)
        raised = [lvl for lvl in (spread, loud, rate) if lvl == "high"]
        lowered = [lvl for lvl in (spread, loud, rate) if lvl == "low"]
        arousal = "high" if len(raised) >= 2 and not lowered else "low" if len(lowered) >= 2 and not raised else None
        emotions: dict[str, float] = {}
        if arousal:
            words = "an aroused, energetic state such as excitement, anger or surprise" if arousal == "high" else "a subdued state such as calm, tiredness or sadness"
            sentences.append(_Sentence(f"Together these suggest {words}.", self._ev(m, pct, "f0_std_semitone", "loudness_mean", "speech_rate_wps")))
            emotions = {"excited": 0.5} if arousal == "high" else {"calm": 0.3}  # arousal alone: a weak label
        return _Analysis(sentences, emotions, arousal)

    def _voice_quality(self, m: dict[str, float], pct: dict[str, float | None]) -> _Sentence | None:
        jitter = _level(pct.get("acoustics.egemaps.jitterLocal_sma3nz_amean"))
        shimmer = _level(pct.get("acoustics.egemaps.shimmerLocaldB_sma3nz_amean"))
        hnr = _level(pct.get("acoustics.egemaps.HNRdBACF_sma3nz_amean"))
        ev = self._ev(m, pct, "jitterLocal_sma3nz_amean", "shimmerLocaldB_sma3nz_amean", "HNRdBACF_sma3nz_amean", group="egemaps")
        if hnr == "low" and "high" in (jitter, shimmer):
            return _Sentence("The voice sounds rough and strained.", ev)
        if hnr == "high" and "high" not in (jitter, shimmer):
            return _Sentence("The voice sounds clear and steady.", ev)
        return None

    @staticmethod
    def _ev(m: dict[str, float], pct: dict[str, float | None], *names: str, group: str = "prosody") -> list[tuple[str, float, float | None]]:
        out = []
        for name in names:
            path = f"acoustics.{group}.{name}"
            if path in m:
                out.append((path, m[path], pct.get(path)))
        return out

    # -- visual -----------------------------------------------------------------------------
    def visual(self, item: Any) -> _Analysis | Unavailable:
        faces = item.fields.get("faces") or {}
        media = item.fields.get("media") or {}
        sampled = media.get("frames_sampled") or 0
        if not sampled:
            return Unavailable("no frames were sampled")
        seen = faces.get("frames_with_face") or 0
        crops = faces.get("crops") or []
        if not crops:
            return _Analysis([_Sentence("In the video, no face is visible in the sampled frames, so the face gives no clue.", [("faces.frames_with_face", float(seen), None)])], {})
        sentences = []
        if seen < sampled / 2:
            sentences.append(_Sentence("In the video, the face is visible only part of the time.", [("faces.frames_with_face", float(seen), None)]))
        duration = media.get("duration_s") or max(c["time_s"] for c in crops) + 1e-3
        parts = []
        for label, lo, hi in (("at the beginning", 0.0, 1 / 3), ("in the middle", 1 / 3, 2 / 3), ("by the end", 2 / 3, 1.01)):
            idx = [i for i, c in enumerate(crops) if lo <= c["time_s"] / duration < hi]
            if not idx:
                continue
            mean = {k: sum(crops[i]["expression"][k] for i in idx) / len(idx) for k in crops[idx[0]]["expression"]}
            top = max(sorted(mean), key=lambda k: mean[k])
            path = f"faces.crops[{idx[0]}:{idx[-1] + 1}].expression.{top}"
            parts.append((label, top if mean[top] >= CLEAR_EXPRESSION else None, (path, round(mean[top], 4), None)))
        whole = faces.get("expression_mean") or {}
        top_all = max(sorted(whole), key=lambda k: whole[k]) if whole else None
        emotions = {EXPRESSION_LABELS[top_all]: whole[top_all]} if top_all and whole[top_all] >= CLEAR_EXPRESSION else {}
        stated = [p for p in parts if p[1]]
        opener = "In the video" if not sentences else "When it is visible"
        if stated and all(p[1] == stated[0][1] for p in stated) and len(stated) == len(parts):
            sentences.append(_Sentence(f"{opener}, the person {EXPRESSION_PHRASES[stated[0][1]]} throughout the clip.", [p[2] for p in parts]))
        else:
            bits = [f"{label} the person {EXPRESSION_PHRASES[top]}" if top else f"{label} the expression is hard to read" for label, top, _ in parts]
            sentences.append(_Sentence(f"{opener}, " + "; ".join(bits) + ".", [p[2] for p in parts]))
        return _Analysis(sentences, emotions, "high" if top_all in HIGH_AROUSAL else "low" if top_all in LOW_AROUSAL else None)

    # -- lexical ----------------------------------------------------------------------------
    def lexical(self, item: Any) -> _Analysis | Unavailable:
        chosen = item.chosen.get("subtitle")
        transcript = item.fields.get("transcript") or {}
        if chosen is not None and chosen.value:
            text, language, where = chosen.value, chosen.language, "explanation.subtitle.text"
        else:
            text, language, where = transcript.get("text") or "", transcript.get("language"), "transcript.text"
        if transcript.get("reason") and not text:
            return Unavailable(f"no words to read: {transcript['reason']}")
        words = _tokens(text, drop_names=language == "en")
        if not words:
            return _Analysis([_Sentence("In the text, nothing is said, so the words give no clue.", [("transcript.word_count", 0.0, None)])], {})
        quote = f'In the text, the speaker says: "{text.strip()}"' + ("" if text.strip()[-1:] in ".!?。！？" else ".")
        if language != "en":
            language = language or "unknown"
            return _Analysis([_Sentence(f"{quote} No emotion lexicon is available for language {language!r}, so the words are not scored.", [(where, float(len(words)), None)])], {})
        hits = _lexicon_hits(words)
        if not hits:
            return _Analysis([_Sentence(f"{quote} The words themselves carry no clear emotion.", [(f"{where}#nrc", 0.0, None)])], {})
        ranked = sorted(hits, key=lambda e: (-len(set(hits[e])), e))[:3]
        described = "; ".join(f"{NOUNS[LEXICON_LABELS[e]]} ({', '.join(repr(w) for w in sorted(set(hits[e])))})" for e in ranked)
        sentence = _Sentence(f"{quote} Its words carry {described}.", [(f"{where}#nrc:{e}", float(len(hits[e])), None) for e in ranked])
        # one lexicon word alone is weak evidence; two or more different words make a clear clue
        # trust and anticipation are described but not labelled: the lexicon gives them to everyday words
        emotions = {LEXICON_LABELS[e]: 0.2 if len(set(hits[e])) == 1 else min(1.0, len(set(hits[e])) / 3) for e in ranked if e not in ("trust", "anticipation")}
        arousal = "high" if ranked[0] in HIGH_AROUSAL else "low" if ranked[0] in LOW_AROUSAL else None
        return _Analysis([sentence], emotions, arousal)

    # -- merge ------------------------------------------------------------------------------
    def merge(self, item: Any) -> tuple[list[_Sentence], list[str]]:
        """Which clue supports which emotion, and the labels the clues together support enough.

        Only clues the rules wrote take part: where the record's clue came from a person or an LLM,
        re-reading the measures could contradict it."""
        clues = {}
        for name, analyse, field_name in (("facial expression", self.visual, "visual_clue"), ("voice", self.acoustic, "acoustic_clue"), ("words", self.lexical, "lexical_clue")):
            chosen = item.chosen.get(field_name)
            if chosen is not None and chosen.source != SOURCE:
                continue  # the record's clue came from elsewhere: a merge must not contradict it
            result = analyse(item)
            if not isinstance(result, Unavailable):
                clues[name] = result
        support: dict[str, dict[str, float]] = {}
        for name, analysis in clues.items():
            for label, strength in analysis.emotions.items():
                support.setdefault(label, {})[name] = strength
        total = {label: sum(by_clue.values()) for label, by_clue in support.items()}
        energetic = [label for label in total if label in ENERGETIC_LABELS]
        tension = ""
        if "calm" in total and energetic:
            # a calm face with an energetic voice (or the reverse): keep the better-supported side
            strongest = max(total[label] for label in energetic)
            loser = "calm" if strongest >= total["calm"] else None
            tension = " The calm and the energetic cues pull in different directions."
            for label in ["calm"] if loser else energetic:
                total.pop(label)
        evidence = list(dict.fromkeys(e for a in clues.values() for s in a.sentences for e in s.evidence))
        if not support:
            return [_Sentence("Taken together, the clues show no clear emotion.", evidence)], []
        parts = []
        for name, analysis in clues.items():
            named = [label for label in sorted(analysis.emotions, key=lambda lb: (-analysis.emotions[lb], lb))]
            if named:
                verb = "suggests" if name != "words" else "suggest"
                parts.append(f"the {name} {verb} {_join([NOUNS.get(lb, lb) for lb in named])}")
        labels = sorted((lb for lb in total if total[lb] >= CLEAR_EXPRESSION), key=lambda lb: (-len(support[lb]), -total[lb], lb))
        agreed = [lb for lb in labels if len(support[lb]) > 1]
        agreement = f" The {' and the '.join(support[agreed[0]])} agree on {NOUNS.get(agreed[0], agreed[0])}." if agreed else ""
        conclusion = f" Therefore, the person is probably {_join(labels)}." if labels else " No emotion is supported strongly enough to name."
        text = "Taken together, " + "; ".join(parts) + "." + agreement + tension + conclusion
        return [_Sentence(text, evidence)], labels


def _row(field_name: str, sentence: str, measure: str, value: float, percentile: float | None) -> dict[str, Any]:
    return {"field": field_name, "sentence": sentence, "measure": measure, "value": float(value), "corpus_percentile": percentile}


def _join(words: list[str]) -> str:
    return words[0] if len(words) == 1 else ", ".join(words[:-1]) + " and " + words[-1]


TITLES = ("mr.", "mrs.", "ms.", "dr.", "st.", "prof.")


def _tokens(text: str, drop_names: bool = False) -> list[str]:
    """Lowercased words; with `drop_names`, capitalised words inside a sentence (names: the lexicon
    reads "John" as a toilet) are left out."""
    words = []
    for match in re.finditer(r"[^\W\d_]+(?:['-][^\W\d_]+)*", text):
        word = match.group()
        before = text[: match.start()].rstrip()
        sentence_start = not before or (before[-1] in ".!?\"'" and not before.lower().endswith(TITLES))
        if drop_names and word[0].isupper() and not sentence_start:
            continue
        words.append(word.lower())
    return words


def _lexicon_hits(words: list[str]) -> dict[str, list[str]]:
    """NRC Emotion Lexicon (Mohammad & Turney) as shipped by `nrclex`: emotion -> matching words."""
    from nrclex import NRCLex

    scorer = NRCLex(None)
    scorer.load_token_list(words)
    hits: dict[str, list[str]] = {}
    for word, affects in scorer.affect_dict.items():
        for affect in affects:
            if affect in LEXICON_EMOTIONS:
                hits.setdefault(affect, []).extend([word] * words.count(word))
    return hits
