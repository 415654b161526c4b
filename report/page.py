"""report.html itself: the overview tables (built here, escaped), the plots, and the gallery's JSON blob.

Everything taken from a build is escaped (html.escape in the overview; textContent in the gallery script;
`<` escaped inside the JSON blob), and a Content-Security-Policy lets the page run only its own two inline
scripts and load only files beside it: a record's text can never become markup or reach the network.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections import Counter
from html import escape
from typing import Any

from emer_builder.report.collect import EXPLAINED, GROUPS_WITH_REASON, BuildData
from emer_builder.report.media import SampleMedia
from emer_builder.report.plots import Plot
from emer_builder.report.static import CSS, ERRORS, GALLERY
from emer_builder.report.tally import PATHS_SHOWN

PAGE_SIZE = 24
TRUNCATED_SHOWN = 100  # truncated records listed in the overview; manifest.json lists them all
LABELS_LISTED = 2000  # label suggestions in the filter's list (most frequent first)


def render_page(data: BuildData, media: dict[str, SampleMedia], plots: list[Plot], notes: list[str]) -> str:
    """The whole page as one string: same inputs, same bytes."""
    items = gallery_items(data, media)
    blob = json.dumps({"items": items, "page_size": PAGE_SIZE, "filters": _filters(data, items)}, ensure_ascii=False, sort_keys=True, separators=(",", ":"))
    blob = blob.replace("<", "\\u003c")  # no `</script>` or `<!--` can end the blob early
    m = data.manifest
    title = f"EMER build report · {m.get('tool', 'emer-builder')} · config {str(m.get('config_hash', ''))[:12]}"
    csp = "; ".join(
        (
            "default-src 'none'",
            f"script-src {_hash(ERRORS)} {_hash(GALLERY)}",
            f"style-src {_hash(CSS)}",
            "img-src 'self'",
            "media-src 'self'",
            "base-uri 'none'",
            "form-action 'none'",
        )
    )
    return f"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="{csp}">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{escape(title)}</title>
<style>{CSS}</style>
<script>{ERRORS}</script>
</head>
<body>
<header class="top"><div><h1>EMER build report</h1>
<nav><a href="#overview">Overview</a><a href="#plots">Plots</a><a href="#gallery">Gallery</a></nav>
<span class="muted">{escape(title.split(" · ", 1)[1])}</span></div></header>
<main>
<pre id="report-errors" hidden></pre>
{overview_html(data, notes)}
{plots_html(plots)}
{gallery_html()}
</main>
<script type="application/json" id="report-data">{blob}</script>
<script>{GALLERY}</script>
</body>
</html>
"""


def overview_html(data: BuildData, notes: list[str]) -> str:
    m = data.manifest
    counts = m.get("counts", {})
    stats = m.get("stats", {})
    tally = data.tally  # every record here, counted (the manifest's figures come first: they count the whole build)
    records = counts.get("records", tally.records)
    faces = stats.get("clips_with_faces", sum(t.faces for t in tally.splits.values()))
    audio_s = stats.get("audio_seconds")
    if audio_s is None:
        audio_s = sum(t.audio_s for t in tally.splits.values())
    languages = stats.get("records_per_language") or dict(tally.languages)
    truncated = truncated_records(data)
    tiles = [
        ("inputs", counts.get("inputs"), "video files found"),
        ("records", records, "clips that became records"),
        ("failures", counts.get("failures", data.failure_tally.count), "inputs that became failure rows"),
        ("skipped", counts.get("skipped_files"), "entries skipped (not videos, links not followed)"),
        ("truncated", None if truncated is None else len(truncated), "records cut short, decoded in part"),
        ("audio-hours", f"{audio_s / 3600:.3f}", f"hours of audio ({audio_s:.1f} s)"),
        ("faces", faces, f"of {records} clips with a face"),
        ("languages", ", ".join(f"{k} {v}" for k, v in sorted(languages.items())) or "none", "transcript languages (records)"),
        ("wall-time", _seconds(data.timings.get("wall_s")), "build wall time"),
    ]
    parts = ['<section id="overview"><h2>Overview</h2>']
    parts += [f'<p class="note">{escape(n)}</p>' for n in notes]
    parts.append('<div class="tiles">')
    for name, value, label in tiles:
        shown = "n/a" if value is None else value
        parts.append(f'<div class="tile"><b data-stat="{name}">{escape(str(shown))}</b><span>{escape(label)}</span></div>')
    parts.append("</div>")
    parts.append(f'<p>Inputs: <code>{escape(str(m.get("videos_dir", "?")))}</code> · config hash <code data-stat="config-hash">{escape(str(m.get("config_hash", "?")))}</code>'
                 f' · schema {escape(str(m.get("schema_version", "?")))} · {escape(str(m.get("tool", "")))}</p>')
    parts.append('<div class="cols"><div>')
    parts.append(_splits_table(data))
    parts.append(_failures_tables(data))
    parts.append(_truncated_table(truncated))
    parts.append("</div><div>")
    parts.append(_timings_table(data.timings))
    parts.append(_sources_table(data))
    parts.append("</div></div>")
    parts.append('<div class="cols"><div>')
    parts.append(_models_table(m))
    parts.append("</div><div>")
    parts.append(_annotations_html(m))
    parts.append("</div></div>")
    config = json.dumps(m.get("config", {}), indent=2, sort_keys=True, ensure_ascii=False)
    parts.append(f"<details><summary>Build config (hash <code>{escape(str(m.get('config_hash', '?')))}</code>)</summary><pre>{escape(config)}</pre></details>")
    skipped = m.get("skipped_files") or []
    if skipped:  # the first hundred: a folder of extracted frames next to the videos would make the page megabytes
        listed = chr(10).join(map(str, skipped[:100])) + (f"{chr(10)}… and {len(skipped) - 100} more (manifest.json lists them all)" if len(skipped) > 100 else "")
        parts.append(f"<details><summary>{len(skipped)} skipped non-video files</summary><pre>{escape(listed)}</pre></details>")
    parts.append("</section>")
    return "\n".join(parts)


def _splits_table(data: BuildData) -> str:
    m = data.manifest
    rows = []
    for split in data.splits:
        t = data.tally.splits.get(split)
        present, faces, hours = (t.records, t.faces, t.audio_s / 3600) if t else (0, 0, 0.0)
        expected = m.get("splits", {}).get(split, present)
        rows.append(
            f'<tr><td>{escape(split)}</td><td class="n" data-split-count="{escape(split)}">{escape(str(expected))}</td><td class="n">{escape(str(m.get("shards", {}).get(split, "")))}</td>'
            f'<td class="n">{present}</td><td class="n">{faces}</td><td class="n">{hours:.3f}</td></tr>'
        )
    head = '<tr><th>split</th><th class="n">records</th><th class="n">shards</th><th class="n">here</th><th class="n">with face</th><th class="n">audio h</th></tr>'
    return f"<h3>Records per split</h3><table>{head}{''.join(rows)}</table>"


def _failures_tables(data: BuildData) -> str:
    by_stage = data.manifest.get("failures_by_stage") or dict(data.failure_tally.stages)
    if not by_stage:
        return '<h3>Failures</h3><p data-stat="failures-none">None: every input became a record.</p>'
    rows = "".join(f'<tr><td>{escape(s)}</td><td class="n" data-failure-stage="{escape(s)}">{escape(str(n))}</td></tr>' for s, n in sorted(by_stage.items()))
    parts = [f'<h3>Failures by stage</h3><table><tr><th>stage</th><th class="n">inputs</th></tr>{rows}</table>']
    groups = data.failure_tally.reasons
    if groups:
        parts.append('<h3>Failures by reason</h3><table><tr><th>stage</th><th>reason</th><th class="n">inputs</th><th>paths</th></tr>')
        for (stage, error), g in sorted(groups.items(), key=lambda g: (-g[1].count, g[0])):
            messages = sorted(g.messages.items(), key=lambda x: (-x[1], x[0]))[:3]
            reason = "<br>".join(escape(msg[:300]) for msg, _ in messages)
            where = "the gallery and failures.parquet" if not data.failure_tally.gallery.sampled else "failures.parquet"
            more = f"<br>… and {g.count - PATHS_SHOWN} more (all in {where})" if g.count > PATHS_SHOWN else ""
            parts.append(
                f'<tr><td>{escape(stage)}</td><td><b>{escape(error)}</b><br>{reason}</td><td class="n">{g.count}</td>'
                f'<td class="paths">{"<br>".join(escape(p) for _, p in g.first)}{more}</td></tr>'
            )
        parts.append("</table>")
    return "".join(parts)


def truncated_records(data: BuildData) -> list[dict[str, Any]] | None:
    """Records flagged media.truncated: the manifest's list, else the records here; None when neither says
    (a build made before the flag was counted, read without its Parquet tables)."""
    listed = data.manifest.get("truncated")
    if isinstance(listed, list):
        return [t for t in listed if isinstance(t, dict)]
    if not data.tally.truncation_known:
        return None
    return sorted(data.tally.truncated, key=lambda t: t["key"])


def _truncated_table(truncated: list[dict[str, Any]] | None) -> str:
    head = '<h3 id="truncated">Truncated records</h3>'
    if truncated is None:
        return f'{head}<p class="muted" data-stat="truncated-unknown">This build did not record which files were cut short.</p>'
    if not truncated:
        return f'{head}<p data-stat="truncated-none">None: every record decoded to its declared length.</p>'

    def number(value: Any, form: str) -> str:
        return "?" if not isinstance(value, (int, float)) else format(value, form)

    rows = "".join(
        f'<tr data-truncated="{escape(str(t.get("key")))}"><td>{escape(str(t.get("key")))}</td><td class="paths">{escape(str(t.get("source_path")))}</td>'
        f'<td class="n">{number(t.get("decoded_duration_s"), ".2f")}</td><td class="n">{number(t.get("declared_duration_s"), ".2f")}</td>'
        f'<td class="n">{number(t.get("decoded_fraction"), ".0%")}</td></tr>'
        for t in truncated[:TRUNCATED_SHOWN]
    )
    more = f"<p>… and {len(truncated) - TRUNCATED_SHOWN} more (all in manifest.json, key <code>truncated</code>)</p>" if len(truncated) > TRUNCATED_SHOWN else ""
    return (
        f"{head}<p>{len(truncated)} files were cut short (a partial download, an unfinished copy) and decoded only in part: "
        "kept as records flagged <code>media.truncated</code>, with <code>media.duration_s</code> what decoded. "
        "Below <code>decode.min_decoded_fraction</code> such a file becomes a failure instead.</p>"
        '<table><tr><th>key</th><th>path</th><th class="n">decoded s</th><th class="n">declared s</th><th class="n">decoded</th></tr>'
        f"{rows}</table>{more}"
    )


def _timings_table(timings: dict[str, Any]) -> str:
    stages = timings.get("stage_seconds") or {}
    if not stages:
        return "<h3>Build time</h3><p class=\"muted\">This build did not record its stage times (build.json).</p>"
    cpu_total = sum(float(t.get("cpu_s") or 0) for t in stages.values()) or 1.0
    loads = timings.get("model_loads") or {}
    rows = []
    for stage, t in sorted(stages.items()):
        share = float(t.get("cpu_s") or 0) / cpu_total
        rows.append(
            f'<tr><td>{escape(stage)}</td><td class="n">{float(t.get("cpu_s") or 0):.1f}</td><td class="n">{float(t.get("wall_s") or 0):.1f}</td>'
            f'<td class="n" data-stage-share="{escape(stage)}">{100 * share:.0f}%</td><td><meter min="0" max="1" value="{share:.3f}"></meter></td>'
            f'<td class="n">{escape(str(loads.get(stage, "")))}</td></tr>'
        )
    head = '<tr><th>stage</th><th class="n">CPU s</th><th class="n">wall s</th><th class="n">share</th><th></th><th class="n">set-ups</th></tr>'
    counters = timings.get("counters") or {}
    extra = f"<p class=\"muted\">Counters: {escape(', '.join(f'{k} {v}' for k, v in sorted(counters.items())))}</p>" if counters else ""
    return (
        f"<h3>Build time: {_seconds(timings.get('wall_s'))} wall</h3><table>{head}{''.join(rows)}{_process_rows(timings.get('cpu'))}</table>"
        "<p class=\"muted\">CPU and wall seconds are summed over clips and workers; a stage's CPU is that of the thread that ran it, "
        "of the ffmpeg processes it ran and of its model's own threads (Whisper's), so stages on two threads at once do not count each other; "
        "share is of the stages' CPU time; set-ups: model loads.</p>" + extra
    )


def _process_rows(cpu: Any) -> str:
    """The run's CPU beside the stages': the rest outside any stage, and the process's total (build.json `cpu`; older builds have none)."""
    if not isinstance(cpu, dict) or not cpu.get("process_s"):
        return ""
    outside, process = float(cpu.get("outside_stages_s") or 0), float(cpu["process_s"])
    return (
        f'<tr><td title="model loads, the runner and the driver, library threads no stage accounts for">outside any stage</td>'
        f'<td class="n" data-cpu="outside">{outside:.1f}</td><td></td><td></td><td></td><td></td></tr>'
        f'<tr><th>process</th><th class="n" data-cpu="process">{process:.1f}</th><th></th><th></th><th></th><th></th></tr>'
    )


def _sources_table(data: BuildData) -> str:
    sources = (data.manifest.get("stats") or {}).get("explanation_sources")
    if not sources:
        sources = data.tally.sources
    if not sources:
        return ""
    columns = sorted({s for c in sources.values() for s in c}, key=lambda s: (s == "null", s))
    head = "<tr><th>field</th>" + "".join(f'<th class="n">{escape(c)}</th>' for c in columns) + "</tr>"
    rows = "".join(
        f"<tr><td>{escape(name)}</td>" + "".join(f'<td class="n">{escape(str(counts.get(c, "")))}</td>' for c in columns) + "</tr>" for name, counts in sorted(sources.items())
    )
    return f'<h3>Explanation sources per field</h3><table>{head}{rows}</table><p class="muted">Records per source; null: no configured source gave a value.</p>'


def _models_table(m: dict[str, Any]) -> str:
    models = m.get("models") or {}
    rows = "".join(f"<tr><td>{escape(k)}</td><td>{escape('not used' if v is None else str(v))}</td></tr>" for k, v in sorted(models.items()) if k != "config_hash")
    packages = m.get("packages") or {}
    pkg = "".join(f"<tr><td>{escape(k)}</td><td>{escape(str(v))}</td></tr>" for k, v in sorted(packages.items()))
    return f"<h3>Models and versions</h3><table>{rows}</table><h3>Packages</h3><table>{pkg}</table>"


def _annotations_html(m: dict[str, Any]) -> str:
    parts = [f"<h3>Emotion wheel</h3><p>{escape(str(m.get('emotion_wheel') or 'not recorded'))}</p>"]
    ann = m.get("annotations") or {}
    files = ann.get("files") or []
    if files:
        rows = "".join(
            f'<tr><td><code>{escape(str(f.get("path")))}</code></td><td>{escape(str(f.get("format")))}</td><td class="n">{escape(str(f.get("rows")))}</td></tr>' for f in files
        )
        parts.append(f'<h3>Annotation tables</h3><table><tr><th>file</th><th>format</th><th class="n">rows</th></tr>{rows}</table>')
        for key, label in (("names_without_video", "names without a video"), ("videos_without_annotation", "videos without an annotation")):
            names = ann.get(key) or []
            listed = ", ".join(map(str, names[:20])) + (f" … and {len(names) - 20} more" if len(names) > 20 else "")
            parts.append(f"<p>{len(names)} {label}{': ' + escape(listed) if names else ''}</p>")
    return "".join(parts)


def plots_html(plots: list[Plot]) -> str:
    figures = []
    for p in plots:
        if p.file:
            figures.append(
                f'<figure id="plot-{escape(p.name)}"><h3>{escape(p.title)}</h3><img src="{escape(_href(p.file))}" alt="{escape(p.title)}" data-plot="{escape(p.name)}">'
                f"<figcaption>{escape(p.caption)}</figcaption></figure>"
            )
        else:
            figures.append(f'<figure id="plot-{escape(p.name)}"><h3>{escape(p.title)}</h3><p class="muted">{escape(p.caption)}</p></figure>')
    return f'<section id="plots"><h2>Plots</h2><div class="plots">{"".join(figures)}</div></section>'


def gallery_html() -> str:
    pager = '<div class="pager"><button type="button" class="prev">previous</button><span class="pages"></span><button type="button" class="next">next</button></div>'
    return f"""<section id="gallery"><h2>Gallery</h2>
<form class="filters" id="filters">
<label>split<select name="split"><option value="">all</option></select></label>
<label>label<input name="label" list="label-list" placeholder="any label" autocomplete="off"></label>
<datalist id="label-list"></datalist>
<label>language<select name="lang"><option value="">all</option></select></label>
<label>explanation source<select name="source"><option value="">all</option></select></label>
<label>status<select name="status"></select></label>
<label>key or path<input name="q" placeholder="contains" autocomplete="off"></label>
</form>
<p id="gallery-status" class="muted"></p>
{pager}
<div id="cards"></div>
{pager}
</section>"""


def gallery_items(data: BuildData, media: dict[str, SampleMedia]) -> list[dict[str, Any]]:
    """One JSON object per record and per failure row, sorted by key: what the gallery script renders."""
    items = [_record_item(r, media.get(r["key"])) for r in data.records]
    items += [
        {"kind": "failure", "key": f["key"], "path": f["source_path"], "stage": f["stage"], "error": f["error_class"], "message": f["message"]} for f in data.failures
    ]
    return sorted(items, key=lambda it: (it["key"], it["kind"]))


def _record_item(r: dict[str, Any], media: SampleMedia | None) -> dict[str, Any]:
    ex = {name: r[f"explanation.{name}"] or {} for name in ("subtitle", *EXPLAINED, "open_vocab_labels", "discrete_label", "valence")}
    ov = ex["open_vocab_labels"]
    labels = [str(x) for x in ov.get("labels") or []]
    normalised = ov.get("normalised")
    discrete = ex["discrete_label"].get("label")
    sources = sorted({v.get("source") for v in ex.values() if v.get("source")})
    duration = r["media.duration_s"]
    missing = [f"{g}: {r[f'{g}.reason']}" for g in GROUPS_WITH_REASON if r.get(f"{g}.reason")]
    return {
        "kind": "record",
        "key": r["key"],
        "split": r["split"],
        "path": r["source_path"],
        "dur": None if duration is None else round(duration, 2),
        "lang": r["transcript.language"],
        "asr": f"whisper {r['transcript.model']}" if r["transcript.model"] else None,
        "transcript": r["transcript.text"],
        "transcript_reason": r["transcript.reason"],
        "subtitle": [ex["subtitle"].get("text"), ex["subtitle"].get("source"), ex["subtitle"].get("language")] if ex["subtitle"].get("text") else None,
        "clues": [[name.replace("_", " "), ex[name].get("text"), ex[name].get("source"), ex[name].get("language"), ex[name].get("reason")] for name in EXPLAINED],
        "labels": labels,
        "labels_source": ov.get("source"),
        "labels_reason": ov.get("reason"),
        "normalised": normalised,
        "discrete": f"{discrete} ({ex['discrete_label'].get('source')})" if discrete else None,
        "valence": None if ex["valence"].get("value") is None else f"{round(ex['valence']['value'], 3):g} ({ex['valence'].get('source')})",
        "sources": sources,
        "find": sorted({x.strip().lower() for x in [*labels, *(normalised or []), *([discrete] if discrete else [])] if x and x.strip()}),
        "strip": _href(media.strip) if media and media.strip else None,
        "shown": media.crops_shown if media else 0,
        "crops": media.crops if media else len(r["faces.crops"] or []),
        "face_reason": r["faces.reason"],
        "audio": _href(media.audio) if media and media.audio else None,
        "audio_reason": None if r["media.has_audio"] is not False else "no audio track",
        "miss": missing,
    }


def _filters(data: BuildData, items: list[dict[str, Any]]) -> dict[str, Any]:
    records = [it for it in items if it["kind"] == "record"]
    labels = Counter(label for it in records for label in it["find"])
    stages = sorted({f["stage"] for f in data.failures})
    status = [["", "records and failures"], ["records", "records"], ["incomplete", "records with a missing part"], ["failures", "failures"]]
    status += [[f"failed:{s}", f"failed at {s}"] for s in stages]
    return {
        "split": [s for s in data.splits if any(it["split"] == s for it in records)],
        "lang": sorted({it["lang"] for it in records if it["lang"]}),
        "source": sorted({s for it in records for s in it["sources"]}),
        "label": sorted(labels, key=lambda x: (-labels[x], x))[:LABELS_LISTED],
        "status": status,
    }


def _href(path: str) -> str:
    from urllib.parse import quote

    return quote(path)


def _hash(text: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode()).digest()).decode() + "'"


def _seconds(value: Any) -> str | None:
    if value is None:
        return None
    s = float(value)
    return f"{s:.1f} s" if s < 120 else f"{s / 60:.1f} min"
