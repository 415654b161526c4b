"""What the driver prepares for the explanation step before any worker starts: field sources,
annotation tables, the emotion wheel and the LLM endpoint, checked. No Beam here, so a no-op
rebuild (which stops after these checks) never imports it."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any
from urllib.parse import urlsplit

from emer_builder.core.config import BuildConfig, LlmConfig
from emer_builder.core.errors import UserError, one_line
from emer_builder.transforms.annotations import AnnotationTable, load_annotations
from emer_builder.transforms.explanation import EXPLAINED_FIELDS, SOURCES
from emer_builder.transforms.keys import VideoInput


def join_names(inputs: list[VideoInput], annotated: set[str]) -> dict[str, str]:
    """key -> the name annotation tables use for the clip: its path without extension when a table
    names clips that way (`video_0001/0001`), else its file name (`sample_00000648`).

    One annotated name matching several videos is an error: the annotation would be copied onto each."""
    names: dict[str, str] = {}
    by_name: dict[str, list[str]] = {}
    for i in inputs:
        path = PurePosixPath(i.source_path).with_suffix("")
        names[i.key] = path.as_posix() if path.as_posix() in annotated else path.name
        by_name.setdefault(names[i.key], []).append(i.source_path)
    shared = sorted((n, paths) for n, paths in by_name.items() if n in annotated and len(paths) > 1)
    if shared:
        name, paths = shared[0]
        raise UserError(
            f"annotated name {name!r} matches {len(paths)} videos ({', '.join(sorted(paths)[:3])}); "
            f"name the table's rows by path without extension (e.g. {PurePosixPath(sorted(paths)[0]).with_suffix('').as_posix()!r})"
            + (f"; {len(shared) - 1} more names are shared" if len(shared) > 1 else "")
        )
    return names


def field_sources(config: BuildConfig) -> dict[str, tuple[str, ...]]:
    """Sources per explanation field, checked: known field names, known sources, an endpoint for llm."""
    e = config.explanation
    unknown = sorted(set(e.sources) - set(EXPLAINED_FIELDS))
    if unknown:
        raise UserError(f"explanation.sources names unknown field(s) {', '.join(unknown)}; fields: {', '.join(EXPLAINED_FIELDS)}")
    sources = {}
    for name in EXPLAINED_FIELDS:
        chosen = e.sources.get(name, e.default_sources)
        if not isinstance(chosen, (list, tuple)) or not all(isinstance(s, str) for s in chosen):
            raise UserError(f"explanation.sources.{name} must be a list of source names ({', '.join(SOURCES)}), got {chosen!r}")
        sources[name] = tuple(chosen)
        bad = sorted(set(chosen) - set(SOURCES))
        if bad:
            raise UserError(f"explanation source(s) {', '.join(bad)} for {name} unknown; sources: {', '.join(SOURCES)}")
    if uses_llm(sources) and not (e.llm.base_url and e.llm.model):
        raise UserError("the llm explainer needs explanation.llm.base_url and explanation.llm.model in the build config")
    return sources


def uses_llm(sources: dict[str, tuple[str, ...]]) -> bool:
    return any("llm" in s for s in sources.values())


def describe_sources(sources: dict[str, tuple[str, ...]]) -> str:
    return "; ".join(f"{name}={'>'.join(s) or 'none'}" for name, s in sources.items())


def make_llm(llm: LlmConfig, language: str) -> Any:
    from emer_builder.core.paths import emer_home
    from emer_builder.transforms.llm_explainer import LlmExplainer

    return LlmExplainer(
        base_url=llm.base_url,
        model=llm.model,
        vision_model=llm.vision_model,
        audio_model=llm.audio_model,
        api_key_env=llm.api_key_env,
        timeout_s=llm.timeout_s,
        max_retries=llm.max_retries,
        concurrency=llm.concurrency,
        cache_dir=llm.cache_dir or str(emer_home() / "llm-cache"),
        send_audio=llm.send_audio,
        temperature=llm.temperature,
        prompt_version=llm.prompt_version,
        language=language,
        max_tokens=llm.max_tokens,
        images=llm.images,
        response_format=llm.response_format,
        seed=llm.seed,
    )


def load_wheel(wheel_dir: str | None) -> tuple[Any, str | None]:
    """The emotion-wheel tables the config asks for: a folder, `fetch` (the pinned download, cached),
    or None: no normalisation, so what a build writes never depends on what the network allows."""
    from emer_builder.transforms.wheel import EmotionWheel
    from emer_builder.transforms.wheel import wheel_dir as resolve

    if wheel_dir is None:
        return None, "no --wheel-dir given (a folder with the tables, or `fetch` to download the pinned ones)"
    return EmotionWheel(resolve(None if wheel_dir == "fetch" else wheel_dir)), None


def check_llm_config(llm: LlmConfig) -> None:
    """Settings the explainer cannot work with, and endpoint URLs that would carry a secret into the
    manifest (which records the config): credentials belong in the variable `api_key_env` names."""
    url = urlsplit(llm.base_url or "")
    if url.scheme not in ("http", "https") or not url.hostname:
        raise UserError(f"explanation.llm.base_url must be an http(s) URL, got {llm.base_url!r}")
    if url.username or url.password or url.query:
        raise UserError("explanation.llm.base_url must not hold credentials or a query string; put the key in the variable named by api_key_env")
    if llm.concurrency < 1 or llm.max_retries < 0 or llm.timeout_s <= 0 or llm.frames < 0:
        raise UserError("explanation.llm: concurrency must be at least 1, max_retries and frames at least 0, timeout_s above 0")
    from emer_builder.transforms.llm_explainer import ASKED_FIELDS

    unknown = sorted(map(str, set(llm.max_tokens) - set(ASKED_FIELDS)))
    if unknown:  # value ranges are checked with the rest of the config (core.config.RANGES)
        raise UserError(f"explanation.llm.max_tokens names field(s) {', '.join(unknown)} the llm does not write; it writes {', '.join(ASKED_FIELDS)}")
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", llm.prompt_version) or ".." in llm.prompt_version:
        raise UserError(f"explanation.llm.prompt_version must be a folder name under transforms/prompts/, got {llm.prompt_version!r}")


@dataclass
class ExplainPlan:
    """What the driver prepared for the explanation step."""

    sources: dict[str, tuple[str, ...]]
    annotations: AnnotationTable
    wheel: Any  # transforms.wheel.EmotionWheel or None
    wheel_problem: str | None
    llm: Any  # transforms.llm_explainer.LlmExplainer or None


def prepare(config: BuildConfig, check_endpoint: bool = True) -> ExplainPlan:
    """Read the tables and check the endpoint in the driver: a broken table or an unreachable LLM
    is one clear error before any worker starts."""
    e = config.explanation
    sources = field_sources(config)
    table = load_annotations(list(e.annotations), list(e.mapped_annotations))
    wheel, problem = load_wheel(e.wheel_dir)
    llm = None
    if uses_llm(sources):
        check_llm_config(e.llm)
        try:
            llm = make_llm(e.llm, e.language)
        except (ValueError, OSError) as err:
            raise UserError(f"explanation.llm: {one_line(err)}") from None
    if llm is not None and check_endpoint:
        try:
            llm.check()
        except Exception as err:  # noqa: BLE001
            raise UserError(f"the llm endpoint {e.llm.base_url} cannot be used: {one_line(err)}") from None
    return ExplainPlan(sources, table, wheel, problem, llm)
