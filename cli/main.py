"""The `emer` command: a thin layer over importable functions."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Iterator
from pathlib import Path

from emer_builder.core.errors import BuildFailed, UserError
from emer_builder.core.version import __version__

BUILD_STACK = ("apache_beam", "ffmpeg", "faster_whisper", "deepface", "cv2", "opensmile", "soundfile", "ai_edge_litert", "nrclex", "matplotlib")


def require_build_extra() -> None:
    """`emer build` on a light install (download, load_split, evaluate only) is one line saying what to install."""
    import importlib.util

    missing = [name for name in BUILD_STACK if importlib.util.find_spec(name) is None]
    if missing:
        raise UserError(f"`emer build` needs the build extra (missing: {', '.join(missing)}): pip install 'emer-builder[build]'")


def _build(args: argparse.Namespace, beam_args: list[str]) -> int:
    require_build_extra()
    from emer_builder.core.config import load_config, with_explanation_inputs, with_segmentation
    from emer_builder.pipelines.build import build

    config = with_segmentation(with_explanation_inputs(load_config(args.config), args.annotations, args.wheel_dir), args.segment, args.segment_table, args.corpus)
    summary = build(args.videos_dir, args.out, config, workers=args.workers, beam_args=beam_args, overwrite=args.overwrite, show_progress=not args.quiet)
    print(summary.text())
    return 0


def _evaluate_suite(args: argparse.Namespace, llm: object) -> int:
    import json

    from emer_builder.evaluate.suite_report import format_suite, format_suite_csv, format_suite_markdown
    from emer_builder.evaluate.unibench import run_suite

    if args.gt or args.pred or not (args.pred_dir and args.gt_dir):
        raise UserError("--suite takes --pred-dir PRED and --gt-dir GT (not --gt / --pred)")
    result = run_suite(args.pred_dir, args.gt_dir, args.wheel_dir, llm, args.suite, args.label_parsing)
    if args.json:
        print(json.dumps(result, indent=2, ensure_ascii=False))
    else:
        print(format_suite_csv(result) if args.csv else format_suite_markdown(result) if args.markdown else format_suite(result), end="" if args.csv else "\n")
    return 0


def _evaluate(args: argparse.Namespace, beam_args: list[str]) -> int:
    import json

    from emer_builder.evaluate import format_summary, run_evaluate_many
    from emer_builder.evaluate.run import llm_settings

    llm = llm_settings(args.config, args.llm_base_url, args.llm_model)
    if args.suite:
        return _evaluate_suite(args, llm)
    if not (args.gt and args.pred) or args.pred_dir or args.gt_dir or args.csv or args.markdown:
        raise UserError("emer evaluate takes --gt FILE and --pred FILE, or --suite mer-unibench with --pred-dir and --gt-dir (--csv and --markdown are for --suite)")
    results = run_evaluate_many(args.gt, args.pred, args.wheel_dir, args.synonyms, args.task, args.label_parsing, llm)
    print(json.dumps(results[0] if len(results) == 1 else results, indent=2, ensure_ascii=False) if args.json else format_summary(results))
    return 0


def _publish(args: argparse.Namespace, beam_args: list[str]) -> int:
    from emer_builder.release.publish import publish

    result = publish(args.out, args.repo, args.version, private=args.private, dry_run=args.dry_run, endpoint=args.endpoint, license=args.license)
    print(result.text())
    return 0


def _download(args: argparse.Namespace, beam_args: list[str]) -> int:
    from emer_builder.release.download import download

    result = download(args.repo, args.to, version=args.version, splits=args.split or None, config=args.config, endpoint=args.endpoint)
    print(result.text())
    return 0


def _cache(args: argparse.Namespace, beam_args: list[str]) -> int:
    from emer_builder.core.config import BuildConfig, load_config
    from emer_builder.core.paths import emer_home
    from emer_builder.transforms.clip_cache import ClipCache

    config = load_config(args.config) if args.config else BuildConfig()
    root = args.dir or config.cache.dir or os.environ.get("EMER_CLIP_CACHE") or str(emer_home() / "clip-cache")
    cache = ClipCache(root)
    if args.prune:
        gone = cache.prune(args.keep_builds)
        print(f"removed {gone['entries']} entries ({gone['bytes'] / 2**20:.1f} MiB) that the last {args.keep_builds} builds did not use")
    s = cache.stats(args.keep_builds)
    print(f"cache {s['root']}: {s['entries']} entries, {s['bytes'] / 2**20:.1f} MiB; {s['builds']} builds recorded; "
          f"{s['unused_entries']} entries ({s['unused_bytes'] / 2**20:.1f} MiB) unused by the last {args.keep_builds} builds")
    return 0


def _models(args: argparse.Namespace, beam_args: list[str]) -> int:
    from emer_builder.transforms.stages.models import install_offline_models

    for name, where in install_offline_models().items():
        print(f"{name}: {where}")
    return 0


def _report(args: argparse.Namespace, beam_args: list[str]) -> int:
    from emer_builder.report import write_report

    print(write_report(args.out, args.to, audio=not args.no_audio))
    return 0


class CorpusNames:
    """`--corpus` choices: the corpus registry's names, read when argparse checks a value or prints help, so that
    the other commands never import the adapters."""

    def __iter__(self) -> Iterator[str]:
        from emer_builder.transforms.corpora import corpus_names

        return iter(corpus_names())

    def __contains__(self, name: object) -> bool:
        return name in list(self)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="emer", description="Build Explainable Multimodal Emotion Recognition datasets from raw videos.")
    p.add_argument("--version", action="version", version=f"emer-builder {__version__}")
    sub = p.add_subparsers(dest="command", required=True)
    b = sub.add_parser("build", help="videos -> WebDataset + Parquet dataset", description="Anything after `--` is passed to Apache Beam as pipeline options.")
    b.add_argument("videos_dir", help="folder of video clips (searched recursively), or an object-store URL such as s3://bucket/videos")
    b.add_argument("--out", required=True, help="output folder, or an object-store URL (the workers write the shards there; the manifest is written last)")
    b.add_argument("--config", help="build config YAML (see README)")
    b.add_argument("--workers", type=int, default=2, help="worker processes for the local runner (default 2)")
    b.add_argument("--overwrite", action="store_true", help="replace an output folder that holds a different build")
    b.add_argument("--quiet", action="store_true", help="no progress line")
    b.add_argument("--annotations", action="append", default=[], metavar="FILE", help="annotation table joined by clip name (repeatable; formats in README)")
    b.add_argument("--wheel-dir", help="emotion-wheel tables for label normalisation: a folder, or `fetch` (pinned download, cached); default: none")
    b.add_argument("--segment", choices=("none", "subtitles", "table", "speech"), help="cut long videos into utterance records (default: segment.mode of the config, else none)")
    b.add_argument("--segment-table", metavar="PATH", help="segment table (CSV/TSV/JSONL: video, start, end; optional id, speaker, text, labels) for --segment table")
    b.add_argument("--corpus", metavar="NAME", choices=CorpusNames(), help="read VIDEOS_DIR as this corpus' own layout: %(choices)s (docs/guide/long-videos.md)")
    b.set_defaults(func=_build)
    e = sub.add_parser("evaluate", help="score predicted emotion labels against ground truth (hit rate, sentiment F1, emotion-wheel P/R/F)")
    e.add_argument("--gt", help="CSV/TSV/JSONL of name + openset/discrete/valence|sentiment, MELD's *_sent_emo.csv, MMSA label.csv[:SPLIT], or a build (OUT[:SPLIT])")
    e.add_argument("--pred", action="append", help="name + openset (list), discrete or sentiment column, or a build; repeatable: one row per file")
    e.add_argument("--task", choices=("discrete", "sentiment", "openset"), help="hit rate, sentiment weighted F1, or emotion-wheel P/R/F (default: from what the files hold)")
    e.add_argument("--suite", choices=("mer-unibench",), help="score a whole benchmark from the authors' files: --pred-dir PRED/results-<dataset>/<run>/ and --gt-dir GT/<dataset>-process/")
    e.add_argument("--pred-dir", help="with --suite: the authors' result folders, results-<dataset>/<run>/checkpoint_*-openset.npz (or our prediction tables)")
    e.add_argument("--gt-dir", help="with --suite: MERBench's label folders, <dataset>-process/label*.npz (or the corpora's tables)")
    e.add_argument("--wheel-dir", help="emotion-wheel tables: a folder, fetch:mertools or fetch:affectgpt (pinned downloads, cached); default: fetch:mertools, fetch:affectgpt with --suite")
    e.add_argument("--synonyms", help="synonym groups for the MER2024 set-level metrics")
    e.add_argument("--label-parsing", choices=("lenient", "authors"), default="lenient", help="list cells: lenient (labels keep commas/apostrophes) or authors (MERTools string_to_list)")
    e.add_argument("--config", help="build config YAML whose explanation.llm endpoint maps open-set predictions to sentiment")
    e.add_argument("--llm-base-url", help="OpenAI-compatible endpoint for that mapping (overrides the config)")
    e.add_argument("--llm-model", help="chat model for that mapping (the authors used Qwen2.5-7B-Instruct)")
    form = e.add_mutually_exclusive_group()
    form.add_argument("--json", action="store_true", help="print the result as JSON (a list with several --pred)")
    form.add_argument("--csv", action="store_true", help="with --suite: one CSV row per checkpoint")
    form.add_argument("--markdown", action="store_true", help="with --suite: the table in Markdown")
    e.set_defaults(func=_evaluate)
    pub = sub.add_parser("publish", help="publish a build as a versioned release (Hub repo, directory or fsspec URL)")
    pub.add_argument("out", help="a finished build folder")
    pub.add_argument("--repo", required=True, help="ORG/NAME on the Hugging Face Hub, or a directory / fsspec URL")
    pub.add_argument("--version", required=True, help="semantic version X.Y.Z, greater than every published one")
    pub.add_argument("--private", action="store_true", help="create the Hub repo as private")
    pub.add_argument("--dry-run", action="store_true", help="print what would be uploaded and the card; change nothing")
    pub.add_argument("--endpoint", help="Hub endpoint (default: HF_ENDPOINT or huggingface.co); for s3:// set AWS_ENDPOINT_URL instead")
    pub.add_argument("--license", default="other", help="licence id for the card (default: other)")
    pub.set_defaults(func=_publish)
    dl = sub.add_parser("download", help="download a published release, verified against its manifest")
    dl.add_argument("repo", help="ORG/NAME on the Hub, or a directory / fsspec URL published by `emer publish`")
    dl.add_argument("--version", help="X.Y.Z (default: the latest)")
    dl.add_argument("--split", action="append", default=[], help="only this split (repeatable)")
    dl.add_argument("--config", choices=("default", "media"), default="default", help="default: Parquet tables; media: WebDataset shards")
    dl.add_argument("--to", required=True, help="destination folder (an interrupted download resumes there)")
    dl.add_argument("--endpoint", help="Hub endpoint (default: HF_ENDPOINT or huggingface.co); for s3:// set AWS_ENDPOINT_URL instead")
    dl.set_defaults(func=_download)
    c = sub.add_parser("cache", help="show the per-clip stage cache, or prune entries recent builds did not use")
    c.add_argument("--dir", help="cache folder or URL (default: cache.dir of --config, $EMER_CLIP_CACHE, else $EMER_HOME/clip-cache)")
    c.add_argument("--config", help="build config whose cache.dir to use")
    c.add_argument("--prune", action="store_true", help="delete entries that none of the last --keep-builds builds used")
    c.add_argument("--keep-builds", type=int, default=1, metavar="N", help="builds whose entries count as used (default 1: the latest)")
    c.set_defaults(func=_cache)
    m = sub.add_parser("models", help="prepare the offline default models (idempotent)")
    m.set_defaults(func=_models)
    r = sub.add_parser("report", help="write the HTML report (overview, plots, sample gallery) of a build or a downloaded release")
    r.add_argument("out", help="a build folder or a downloaded release")
    r.add_argument("--to", help="the HTML file (default OUT/report.html); its images and audio go to the folder of the same name")
    r.add_argument("--no-audio", action="store_true", help="leave the FLAC copies (and the audio players) out")
    r.set_defaults(func=_report)
    return p


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    beam_args: list[str] = []
    if "--" in argv:
        cut = argv.index("--")
        argv, beam_args = argv[:cut], argv[cut + 1 :]
    args = parser().parse_args(argv)
    # Libraries (Beam above all) log start-up chatter on the root logger; users see our own
    # warnings and errors, and everything with EMER_LOG_LEVEL=INFO or DEBUG.
    level = os.environ.get("EMER_LOG_LEVEL")
    logging.basicConfig(level=level or "ERROR", format="%(levelname)s %(name)s: %(message)s")
    for ours in ("pipelines", "transforms", "schemas"):
        logging.getLogger(ours).setLevel(level or "WARNING")
    try:
        return args.func(args, beam_args)
    except UserError as e:
        print(f"emer: error: {e}", file=sys.stderr)
        return 2
    except BuildFailed as e:  # a fault outside the inputs (a killed decoder, memory): nothing committed
        print(f"emer: error: {e.line}", file=sys.stderr)
        return 1
    except BrokenPipeError:  # `emer evaluate ... | head`
        sys.stderr.close()
        return 0
    except KeyboardInterrupt:
        return _interrupted()


def _interrupted() -> int:
    """Ctrl-C: one line. Beam's runner threads die with their own tracebacks and may keep the
    interpreter waiting, so a command-line run ends here (the build already removed its staging)."""
    import threading

    threading.excepthook = lambda args: None
    print("emer: interrupted; the output folder was left as it was", file=sys.stderr, flush=True)
    if threading.current_thread() is threading.main_thread() and sys.argv and Path(sys.argv[0]).name == "emer":
        sys.stdout.flush()
        os._exit(130)
    return 130


if __name__ == "__main__":
    sys.exit(main())
