"""Explanation stage: fills the EMER explanation group field by field from the configured sources.

Each field (subtitle, clues, multimodal explanation, labels, discrete label, valence) has an ordered
list of sources (`annotations`, `rules`, `llm`); the first source that gives a value wins, and later
fields see the values chosen for earlier ones (the LLM's lexical clue reads the chosen visual and
acoustic clues, its label extraction reads the chosen explanation). A field no source can fill is
null with every source's reason.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

from emer_builder.schemas.v1 import EXPLANATION

# Derived from the schema (one source of truth), in its order: later fields may read earlier ones.
# Every struct of the group that carries a `source` is an explained field; `evidence` is not.
EXPLAINED_FIELDS: tuple[str, ...] = tuple(f.name for f in EXPLANATION.fields if any(c.name == "source" for c in f.children))
TEXT_FIELDS: tuple[str, ...] = tuple(f.name for f in EXPLANATION.fields if f.name in EXPLAINED_FIELDS and any(c.name == "text" for c in f.children))
SOURCES: tuple[str, ...] = ("annotations", "rules", "llm")


@dataclass
class FieldValue:
    """One explanation field's value and where it came from.

    `value` is a str for text fields and `discrete_label`, a list[str] for `open_vocab_labels`,
    a float for `valence`. `language` is an ISO 639-1 code (None for valence).
    """

    value: Any
    language: str | None
    source: str  # "human", "rules:<version>" or "llm:<model>"
    prompt_version: str | None = None
    time: str | None = None  # UTC ISO 8601, LLM answers only
    evidence: list[dict[str, Any]] = field(default_factory=list)  # rules: {"sentence", "measure", "value", "corpus_percentile"}
    other_languages: dict[str, Any] = field(default_factory=dict)  # the same value in other languages (bilingual annotation tables)


@dataclass
class Unavailable:
    """A source could not give a value for a field; the reason ends up in the record."""

    reason: str


@dataclass
class ExplainInput:
    """What an explainer may read about one clip."""

    key: str
    name: str  # the id annotation tables use: the last part of the key, e.g. `sample_00000648`
    fields: dict[str, Any]  # field groups measured so far: media, transcript, faces, acoustics
    keyframes: list[tuple[float, bytes]] = field(default_factory=list)  # (time_s, JPEG) spread over the clip
    audio_wav: bytes | None = None  # 16 kHz mono WAV, for models that take audio
    chosen: dict[str, FieldValue] = field(default_factory=dict)  # values fixed so far, in EXPLAINED_FIELDS order


class Explainer(Protocol):
    """A source of explanation fields: `annotations`, `rules` or `llm`."""

    source_name: str  # the name used in the config: "annotations", "rules" or "llm"

    def explain(self, field_name: str, item: ExplainInput) -> FieldValue | Unavailable: ...


def _provenance(value: FieldValue | None, reason: str | None) -> dict[str, Any]:
    if value is None:
        return {"source": None, "prompt_version": None, "time": None, "reason": reason}
    return {"source": value.source, "prompt_version": value.prompt_version, "time": value.time, "reason": None}


class LabelNormaliser(Protocol):
    """The emotion-wheel tables (transforms.wheel.EmotionWheel)."""

    def normalise(self, labels: list[str]) -> list[str]: ...

    def wheel_categories(self, labels: list[str]) -> list[dict[str, Any]]: ...


def field_record(field_name: str, value: FieldValue | None, reason: str | None, wheel: LabelNormaliser | None) -> dict[str, Any]:
    """One explanation field as the schema stores it."""
    prov = _provenance(value, reason)
    v = value.value if value is not None else None

    def translations(name: str) -> list[dict[str, Any]] | None:
        return None if value is None else [{"language": lang, name: other} for lang, other in sorted(value.other_languages.items())]

    if field_name in TEXT_FIELDS:
        return {"text": v, "language": value.language if value else None, **prov, "translations": translations("text")}
    if field_name == "open_vocab_labels":
        normalised = wheel.normalise(v) if (wheel is not None and v is not None) else None
        wheels = wheel.wheel_categories(v) if (wheel is not None and v is not None) else None
        return {"labels": v, "language": value.language if value else None, "normalised": normalised, "wheel": wheels, **prov, "translations": translations("labels")}
    if field_name == "discrete_label":
        return {"label": v, "language": value.language if value else None, **prov, "translations": translations("label")}
    if field_name == "valence":
        return {"value": float(v) if v is not None else None, **prov}
    raise ValueError(f"unknown explanation field {field_name!r}")


def explain_clip(item: ExplainInput, sources: dict[str, tuple[str, ...]], explainers: dict[str, Explainer], wheel: LabelNormaliser | None) -> dict[str, Any]:
    """The explanation group of one clip: each field from the first of its sources that gives a value."""
    group: dict[str, Any] = {}
    evidence: list[dict[str, Any]] = []
    for name in EXPLAINED_FIELDS:
        reasons = []
        chosen = None
        for source in sources[name]:
            result = explainers[source].explain(name, item)
            if isinstance(result, FieldValue):
                chosen = result
                break
            reasons.append(f"{source}: {result.reason}")
        if chosen is not None:
            item.chosen[name] = chosen
            evidence += [{"field": name, **{k: e[k] for k in ("sentence", "measure", "value", "corpus_percentile")}} for e in chosen.evidence]
        group[name] = field_record(name, chosen, "; ".join(reasons) or "no source configured", wheel)
    group["evidence"] = evidence
    return group
