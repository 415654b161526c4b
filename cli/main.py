"""The `emer` command: a thin layer over importable functions."""

from __future__ import annotations

import argparse
import logging
import os
import sys

from emer_builder.core.errors import UserError
from emer_builder.core.version import __version__


def _build(args: argparse.Namespace, beam_args: list[str]) -> int:
    from emer_builder.core.config import load_config, with_explanation_inputs
    from emer_builder.pipelines.build import build

    config = with_explanation_inputs(load_config(args.config), args.annotations, args.wheel_dir)
    summary = build(args.videos_dir, args.out, config, workers=args.workers, beam_args=beam_args, overwrite=args.overwrite, show_progress=not args.quiet)
    print(summary.text())
    return 0


def _evaluate(args: argparse.Namespace, beam_args: list[str]) -> int:
    import json

    from emer_builder.evaluate.metrics import format_report, run_evaluate

    result = run_evaluate(args.gt, args.pred, args.wheel_dir, args.synonyms)
    print(json.dumps(result, indent=2, ensure_ascii=False) if args.json else format_report(result))
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


def _models(args: argparse.Namespace, beam_args: list[str]) -> int:
    from emer_builder.transforms.models import install_offline_models

    for name, where in install_offline_models().items():
        print(f"{name}: {where}")
    return 0


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="emer", description="Build Explainable Multimodal Emotion Recognition datasets from raw videos.")
    p.add_argument("--version", action="version", version=f"emer-builder {__version__}")
    sub = p.add_subparsers(dest="command", required=True)
    b = sub.add_parser("build", help="videos -> WebDataset + Parquet dataset", description="Anything after `--` is passed to Apache Beam as pipeline options.")
    b.add_argument("videos_dir", help="folder of video clips (searched recursively)")
    b.add_argument("--out", required=True, help="output folder")
    b.add_argument("--config", help="build config YAML (see README)")
    b.add_argument("--workers", type=int, default=2, help="worker processes for the local runner (default 2)")
    b.add_argument("--overwrite", action="store_true", help="replace an output folder that holds a different build")
    b.add_argument("--quiet", action="store_true", help="no progress line")
    b.add_argument("--annotations", action="append", default=[], metavar="FILE", help="annotation table joined by clip name (repeatable; formats in README)")
    b.add_argument("--wheel-dir", help="emotion-wheel tables for label normalisation: a folder, or `fetch` (pinned download, cached); default: none")
    b.set_defaults(func=_build)
    e = sub.add_parser("evaluate", help="score predicted labels against ground truth (emotion-wheel, MER2024 sets, discrete)")
    e.add_argument("--gt", required=True, help="ground truth: CSV/JSONL of name + labels, or a built dataset folder (OUT or OUT:SPLIT)")
    e.add_argument("--pred", required=True, help="predictions, same forms as --gt")
    e.add_argument("--wheel-dir", help="folder with the emotion-wheel tables (default: the cache, fetched from the pinned source)")
    e.add_argument("--synonyms", help="synonym groups for the MER2024 set-level metrics")
    e.add_argument("--json", action="store_true", help="print the result as JSON")
    e.set_defaults(func=_evaluate)
    pub = sub.add_parser("publish", help="publish a build as a versioned release (Hub repo, directory or fsspec URL)")
    pub.add_argument("out", help="a finished build folder")
    pub.add_argument("--repo", required=True, help="ORG/NAME on the Hugging Face Hub, or a directory / fsspec URL")
    pub.add_argument("--version", required=True, help="semantic version X.Y.Z, greater than every published one")
    pub.add_argument("--private", action="store_true", help="create the Hub repo as private")
    pub.add_argument("--dry-run", action="store_true", help="print what would be uploaded and the card; change nothing")
    pub.add_argument("--endpoint", help="Hub endpoint (default: huggingface_hub's, i.e. HF_ENDPOINT or huggingface.co)")
    pub.add_argument("--license", default="other", help="licence id for the card (default: other)")
    pub.set_defaults(func=_publish)
    dl = sub.add_parser("download", help="download a published release, verified against its manifest")
    dl.add_argument("repo", help="ORG/NAME on the Hub, or a directory / fsspec URL published by `emer publish`")
    dl.add_argument("--version", help="X.Y.Z (default: the latest)")
    dl.add_argument("--split", action="append", default=[], help="only this split (repeatable)")
    dl.add_argument("--config", choices=("default", "media"), default="default", help="default: Parquet tables; media: WebDataset shards")
    dl.add_argument("--to", required=True, help="destination folder (an interrupted download resumes there)")
    dl.add_argument("--endpoint", help="Hub endpoint")
    dl.set_defaults(func=_download)
    m = sub.add_parser("models", help="prepare the offline default models (idempotent)")
    m.set_defaults(func=_models)
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
    except BrokenPipeError:  # `emer evaluate ... | head`
        sys.stderr.close()
        return 0
    except KeyboardInterrupt:
        print("emer: interrupted; the output folder was left as it was", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
