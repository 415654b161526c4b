"""Throughput of the `llm` explainer against a real LLM server, and what the explanation step adds to a build.

The server: llama.cpp (the `xllamacpp` wheel) serving SmolLM2-135M-Instruct (text only) on this machine's
CPU, started by tests/llama_server.py with 4 slots (`n_parallel`) and 2 threads.

1. Requests in flight: every explanation field of the demo corpus's 7 clips from the model, the clips
   explained on a thread pool of `--in-flight` clips with the explainer's concurrency limit at the same
   number (as the build's explanation step does), a fresh server (empty prompt cache) and no answer cache
   per run: records per minute, seconds of wall time per field, mean request latency, tokens per second
   from the server's own counters.
2. The build: `emer build` of the demo corpus, the per-clip stage cache off, with the rules explainer (the
   default) against every field from the model (concurrency 4, no cached answers), and again with every
   answer cached.

Usage: python -m bench.llm_bench [--in-flight 1,2,4] [--runs 1] [--skip-build]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import date
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
from emer_builder.transforms.explanation import EXPLAINED_FIELDS, ExplainInput, explain_clip
from emer_builder.transforms.llm_explainer import LlmExplainer

from bench.demo_corpus import demo_corpus
from tests.llama_server import MODEL_ID, LlamaServer, missing

GROUPS = ("media", "transcript", "faces", "acoustics")
ASKED = ("visual_clue", "acoustic_clue", "lexical_clue", "multimodal_explanation", "open_vocab_labels")
SLOTS = 4


class TimedExplainer(LlmExplainer):
    """The explainer, timing each request it sends (latency as the client sees it, slot wait included)."""

    def __init__(self, *args: Any, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self.latencies: list[float] = []
        self._timing = threading.Lock()

    def _complete(self, ask: Any, fmt: str) -> tuple[str, str | None]:
        started = time.perf_counter()
        try:
            return super()._complete(ask, fmt)
        finally:
            with self._timing:
                self.latencies.append(time.perf_counter() - started)


def build(videos: Path, out: Path, config: str) -> tuple[float, str]:
    """One `emer build` as a whole process: (wall seconds, its summary)."""
    path = out.with_suffix(".yaml")
    path.write_text(config)
    started = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "emer_builder.cli.main", "build", str(videos), "--out", str(out), "--overwrite", "--quiet", "--config", str(path)],
        capture_output=True,
        text=True,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"build failed: {proc.stderr[-2000:]}")
    return time.perf_counter() - started, proc.stdout


def measured_inputs(out: Path) -> list[ExplainInput]:
    """The demo clips' measured field groups, from a build's Parquet tables."""
    items = []
    for path in sorted((out / "data").glob("*.parquet")):
        for row in pq.read_table(path).to_pylist():
            items.append(ExplainInput(row["key"], row["key"].rsplit("__", 1)[-1], {g: row[g] for g in GROUPS}))
    return sorted(items, key=lambda i: i.key)


def explain_all(items: list[ExplainInput], in_flight: int, work: Path) -> dict[str, Any]:
    """Every field of every clip from a fresh server, `in_flight` clips (and requests) at a time, nothing cached."""
    sources = {name: ("llm",) for name in EXPLAINED_FIELDS}
    load_before = os.getloadavg()[0]
    with LlamaServer(parallel=SLOTS, log_path=work / f"server-{in_flight}.log") as server:
        llm = TimedExplainer(server.base_url, MODEL_ID, concurrency=in_flight, timeout_s=600)
        llm.check()
        before = server.metrics()
        started = time.perf_counter()
        fresh = [ExplainInput(i.key, i.name, i.fields) for i in items]
        with ThreadPoolExecutor(max_workers=in_flight) as pool:
            groups = list(pool.map(lambda item: explain_clip(item, sources, {"llm": llm}, None), fresh))
        wall = time.perf_counter() - started
        after = server.metrics()
    given = sum(1 for g in groups for name in ASKED if g[name]["source"] is not None)
    return {
        "in_flight": in_flight,
        "load_1min": [round(load_before, 2), round(os.getloadavg()[0], 2)],  # other work on the machine, before and after
        "wall_s": wall,
        "records_per_min": 60 * len(items) / wall,
        "s_per_field": wall / given,
        "fields": given,
        "fields_asked": len(items) * len(ASKED),
        "requests": llm.calls,
        "mean_latency_s": statistics.mean(llm.latencies),
        "prompt_tokens": after["prompt_tokens_total"] - before["prompt_tokens_total"],
        "cached_prompt_tokens": after.get("prompt_tokens_cached_total", 0) - before.get("prompt_tokens_cached_total", 0),
        "generated_tokens": after["tokens_predicted_total"] - before["tokens_predicted_total"],
        "stats": {k: v for k, v in llm.stats().items() if v},
    }


def build_figures(videos: Path, work: Path) -> dict[str, Any]:
    """The demo corpus built with the rules, then with every field from the model (answers asked, then cached)."""
    results: dict[str, Any] = {}
    rules_wall, _ = build(videos, work / "rules", "cache: {enabled: false}\n")
    results["rules"] = {"wall_s": rules_wall}
    with LlamaServer(parallel=SLOTS, log_path=work / "server-build.log") as server:
        config = (
            "cache: {enabled: false}\nexplanation:\n  default_sources: [llm]\n  llm:\n"
            f"    base_url: {server.base_url}\n    model: {MODEL_ID}\n    concurrency: {SLOTS}\n    timeout_s: 600\n    cache_dir: {work / 'answers'}\n"
        )
        for name in ("llm", "llm_cached"):
            wall, summary = build(videos, work / name, config)
            results[name] = {"wall_s": wall, "llm_line": next((ln.strip() for ln in summary.splitlines() if ln.strip().startswith("llm:")), "")}
    return results


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--in-flight", default="1,2,4", help="requests (and clips) in flight, comma-separated")
    ap.add_argument("--runs", type=int, default=1, help="runs per setting (medians)")
    ap.add_argument("--skip-build", action="store_true", help="only the throughput figures (needs one rules build for the inputs)")
    ap.add_argument("--work", type=Path, default=None)
    args = ap.parse_args()
    reason = missing()
    if reason:
        sys.exit(f"cannot run: {reason}")
    work = args.work or Path(tempfile.mkdtemp(prefix="emer-llm-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    videos = demo_corpus()
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    figures: dict[str, Any] = {"date": date.today().isoformat(), "machine": f"{os.cpu_count()} cores, {platform.machine()}, Python {platform.python_version()}", "load_before": load}
    if args.skip_build:
        if not (work / "rules" / "manifest.json").is_file():  # a --work folder of an earlier run has the inputs already
            build(videos, work / "rules", "cache: {enabled: false}\n")
    else:
        figures["build"] = build_figures(videos, work)
    items = measured_inputs(work / "rules")
    runs: dict[int, list[dict[str, Any]]] = {}
    for _ in range(args.runs):
        for n in (int(x) for x in args.in_flight.split(",")):
            runs.setdefault(n, []).append(explain_all(items, n, work))
            print(json.dumps(runs[n][-1]), flush=True)
    figures["in_flight"] = {n: sorted(r, key=lambda x: x["wall_s"])[len(r) // 2] | {"walls": [round(x["wall_s"], 1) for x in r]} for n, r in runs.items()}
    print(json.dumps(figures, indent=2))
    print(table(figures, len(items)))
    if args.work is None:
        shutil.rmtree(work, ignore_errors=True)


def table(figures: dict[str, Any], clips: int) -> str:
    """The figures as the Markdown of bench/RESULTS.md."""
    lines = [
        "| in flight | wall s (runs) | records / min | s / field | mean request s | fields given / asked | prompt tokens (cached) | generated tokens | tokens / s | load before, after |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for n, r in figures["in_flight"].items():
        tokens = (r["prompt_tokens"] + r["generated_tokens"]) / r["wall_s"]
        lines.append(
            f"| {n} | {r['wall_s']:.1f} ({', '.join(map(str, r['walls']))}) | {r['records_per_min']:.2f} | {r['s_per_field']:.2f} | {r['mean_latency_s']:.2f} "
            f"| {r['fields']} / {r['fields_asked']} | {r['prompt_tokens']:.0f} ({r['cached_prompt_tokens']:.0f}) | {r['generated_tokens']:.0f} | {tokens:.0f} "
            f"| {', '.join(map(str, r['load_1min']))} |"
        )
    if "build" in figures:
        b = figures["build"]
        lines += ["", "| build of the demo corpus (stage cache off) | wall s | added by the explanation |", "|---|---|---|"]
        for name, label in (("rules", "rules explainer (default)"), ("llm", "every field from the model"), ("llm_cached", "every field from the model, answers cached")):
            lines.append(f"| {label} | {b[name]['wall_s']:.1f} | {b[name]['wall_s'] - b['rules']['wall_s']:+.1f} s |")
        lines += ["", *(f"- {name}: `{b[name]['llm_line']}`" for name in ("llm", "llm_cached"))]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
