"""The report's plots, drawn by matplotlib as SVG files: deterministic (hash salt pinned, no date, text kept as
text) so the same build gives byte-identical plots. Figures are made without pyplot: no global state, no GUI."""

from __future__ import annotations

import io
import math
import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

from emer_builder.core.errors import UserError
from emer_builder.report.tally import RecordTally, SplitTally

PALETTE = ("#4c72b0", "#dd8452", "#55a868", "#c44e52", "#8172b3", "#937860", "#da8bc3", "#8c8c8c")
FAILURE_COLOUR = "#9a9a9a"
RC = {
    "svg.hashsalt": "emer-report",  # ids derived from content, not random
    "svg.fonttype": "none",  # text stays text: smaller files, selectable, and no glyph paths whose ids vary
    "text.parse_math": False,  # labels are data: `$$` or `$_$` is text, not mathtext (which failed the whole build)
    "font.size": 9,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.titlesize": 10,
    "legend.fontsize": 8,
    "legend.frameon": False,
}
TOP_LABELS = 20
CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")


@dataclass(frozen=True)
class Plot:
    """One figure of the report: `file` is relative to the report, `caption` says what it counts."""

    name: str
    title: str
    caption: str
    file: str | None  # None: no data to draw (the caption says why)


def draw_plots(tally: RecordTally, splits: list[str], failures: int, folder: Path, href: str) -> list[Plot]:
    """Every plot of the report as `folder/plots/{name}.svg`, linked as `href/plots/{name}.svg`, from the tally of
    every record (a build's plots count all its records, whatever the gallery shows)."""
    try:
        import matplotlib
        from matplotlib.figure import Figure
    except ImportError:
        raise UserError("the report needs matplotlib: pip install 'emer-builder[report]'") from None
    colours = {s: PALETTE[i % len(PALETTE)] for i, s in enumerate(splits)}
    by_split = {s: tally.splits.get(s) or SplitTally() for s in splits}
    classes = next((t.classes for t in by_split.values() if t.classes), [])  # the first split's, as its records come
    makers: list[tuple[str, str, Callable[..., str | None]]] = [
        ("splits", "Split sizes", _splits),
        ("durations", "Clip durations", _durations),
        ("faces", "Faces: found rate and main-face size", _faces),
        ("expressions", "Facial expression (dominant class per clip)", partial(_expressions, classes=classes)),
        ("prosody", "Pitch and loudness", _prosody),
        ("labels", "Open-vocabulary labels", _labels),
        ("wheel", "Labels on the emotion wheel", _wheel),
    ]
    (folder / "plots").mkdir(parents=True, exist_ok=True)
    plots = []
    with matplotlib.rc_context(RC):
        for name, title, make in makers:
            fig = Figure(figsize=(6.4, 3.0), layout="constrained")
            caption = make(fig, by_split, colours, failures)
            if caption is None or not fig.axes:
                plots.append(Plot(name, title, caption or "no data in this build", None))
                continue
            out = io.StringIO()
            fig.savefig(out, format="svg", metadata={"Date": None})
            (folder / "plots" / f"{name}.svg").write_text(out.getvalue(), encoding="utf-8")
            plots.append(Plot(name, title, caption, f"{href}/plots/{name}.svg"))
    return plots


Groups = dict[str, SplitTally]


def _splits(fig: Any, by_split: Groups, colours: dict[str, str], failures: int) -> str | None:
    names = list(by_split) + (["failures"] if failures else [])
    counts = [t.records for t in by_split.values()] + ([failures] if failures else [])
    if not any(counts):
        return None
    ax = fig.add_subplot()
    bars = ax.bar(names, counts, color=[colours.get(n, FAILURE_COLOUR) for n in names])
    ax.bar_label(bars, padding=2)
    _counts_axis(ax.yaxis)
    ax.set_ylabel("clips")
    return "Records per split (from the Parquet tables present), and the inputs that became failure rows."


def _durations(fig: Any, by_split: Groups, colours: dict[str, str], failures: int) -> str | None:
    values = {s: t.durations for s, t in by_split.items()}
    if not any(values.values()):
        return None
    ax = fig.add_subplot()
    _stacked_hist(ax, values, colours)
    ax.set_xlabel("duration (s)")
    ax.set_ylabel("clips")
    total = sum(map(len, values.values()))
    return f"Duration of each clip as ffprobe reports it ({total} clips), stacked by split."


def _faces(fig: Any, by_split: Groups, colours: dict[str, str], failures: int) -> str | None:
    found = {s: t.faces for s, t in by_split.items()}
    sizes = {s: t.face_sizes for s, t in by_split.items()}
    if not any(t.records for t in by_split.values()):
        return None
    left, right = fig.subplots(1, 2)
    names = list(by_split)
    rates = [100 * found[s] / by_split[s].records if by_split[s].records else 0 for s in names]
    bars = left.bar(names, rates, color=[colours[s] for s in names])
    left.bar_label(bars, labels=[f"{found[s]}/{by_split[s].records}" for s in names], padding=2)
    left.set_ylim(0, 115)
    left.set_ylabel("clips with a face (%)")
    left.set_title("face found")
    if any(sizes.values()):
        _stacked_hist(right, sizes, colours)
        right.set_xlabel("face height / frame height")
        right.set_ylabel("clips")
    right.set_title("main-face size")
    return "Left: share of clips whose main face was found in at least one sampled frame. Right: the main face's box height over the frame height (median over its crops)."


def _expressions(fig: Any, by_split: Groups, colours: dict[str, str], failures: int, classes: list[str]) -> str | None:
    dominant = {s: t.dominant for s, t in by_split.items()}
    if not classes or not any(dominant.values()):
        return None
    ax = fig.add_subplot()
    splits = [s for s in by_split if dominant[s]]
    width = 0.8 / len(splits)
    for i, s in enumerate(splits):
        n = sum(dominant[s].values())
        ax.bar([j + i * width - 0.4 + width / 2 for j in range(len(classes))], [100 * dominant[s][c] / n for c in classes], width, label=s, color=colours[s])
    ax.set_xticks(range(len(classes)), classes)
    ax.set_ylabel("clips with a face (%)")
    ax.legend()
    return "For each clip with a face, the expression class with the highest mean probability over its crops; share per split."


def _prosody(fig: Any, by_split: Groups, colours: dict[str, str], failures: int) -> str | None:
    pitch = {s: t.pitch for s, t in by_split.items()}
    loud = {s: t.loudness for s, t in by_split.items()}
    if not any(pitch.values()) and not any(loud.values()):
        return None
    left, right = fig.subplots(1, 2)
    for ax, values, label in ((left, pitch, "mean F0 (semitones above 27.5 Hz)"), (right, loud, "mean loudness (openSMILE)")):
        if any(values.values()):
            _stacked_hist(ax, values, colours)
        ax.set_xlabel(label)
        ax.set_ylabel("clips")
    return "openSMILE eGeMAPSv02 prosody of each clip with audio: mean pitch over voiced frames and mean loudness, stacked by split."


def _labels(fig: Any, by_split: Groups, colours: dict[str, str], failures: int) -> str | None:
    counts = {s: t.labels for s, t in by_split.items()}
    total = sum(counts.values(), Counter())
    if not total:
        return None
    top = sorted(total, key=lambda label: (-total[label], label))[:TOP_LABELS]
    ax = fig.add_subplot()
    _stacked_barh(ax, top, counts, colours)
    ax.set_xlabel("clips")
    more = f" ({len(total) - len(top)} more not shown)" if len(total) > len(top) else ""
    return f"The {len(top)} most frequent open-vocabulary labels as given{more}; a clip counts once per label."


def _wheel(fig: Any, by_split: Groups, colours: dict[str, str], failures: int) -> str | None:
    counts = {s: t.wheel for s, t in by_split.items()}
    total = sum(counts.values(), Counter())
    if not total:
        return "labels were not normalised in this build (no emotion-wheel tables): see the overview's emotion wheel entry"
    categories = sorted(total, key=lambda c: (-total[c], c))
    ax = fig.add_subplot()
    _stacked_barh(ax, categories, counts, colours)
    ax.set_xlabel("clips")
    return "Normalised labels mapped to level-1 categories of emotion wheel 1; a clip counts once per category."


def _shown(text: str) -> str:
    """A label as drawn: control characters (which SVG, an XML file, cannot hold) as U+FFFD."""
    return CONTROL.sub("\ufffd", text)


def _counts_axis(axis: Any) -> None:
    """Clips are whole: no 0.5 ticks on a count axis."""
    from matplotlib.ticker import MaxNLocator

    axis.set_major_locator(MaxNLocator(integer=True))


def _stacked_hist(ax: Any, values: dict[str, Any], colours: dict[str, str]) -> None:
    import numpy as np

    values = {s: [x for x in v if math.isfinite(x)] for s, v in values.items()}  # a NaN or inf has no bin
    names = [s for s, v in values.items() if v]
    if not names:
        return
    every = np.concatenate([np.asarray(values[s], dtype=float) for s in names])
    edges = np.histogram_bin_edges(every, bins=min(30, max(5, int(np.sqrt(len(every))))))
    ax.hist([values[s] for s in names], bins=edges, stacked=True, color=[colours[s] for s in names], label=names)
    _counts_axis(ax.yaxis)
    ax.legend()


def _stacked_barh(ax: Any, names: list[str], counts: dict[str, Counter[str]], colours: dict[str, str]) -> None:
    left = [0] * len(names)
    positions = list(range(len(names)))[::-1]  # most frequent on top
    for s, c in counts.items():
        widths = [c[n] for n in names]
        if any(widths):
            ax.barh(positions, widths, left=left, color=colours[s], label=s)
            left = [a + b for a, b in zip(left, widths, strict=True)]
    ax.set_yticks(positions, [_shown(n) for n in names])
    _counts_axis(ax.xaxis)
    ax.legend()
    fig = ax.figure
    fig.set_figheight(max(2.4, 0.6 + 0.18 * len(names)))
