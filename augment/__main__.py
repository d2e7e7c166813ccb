"""Command line of the augmentation package: ``python -m augment <subcommand> [options]``; ``--help`` lists them.

A subcommand is one function that adds its parser to the subparsers, declares its options and sets
``handler`` (parsed arguments -> exit status) with ``set_defaults``; ``SUBCOMMANDS`` registers it. To add one,
write that function and append it to ``SUBCOMMANDS``. Import heavy modules inside the handler so that other
subcommands stay quick to start.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from augment.export import ExportError
from augment.inspect import InspectError
from augment.readers import DataReadError
from core.tasks import TRAITS


def add_inspect(subparsers: argparse._SubParsersAction) -> None:
    """``inspect PATH [--id ID] [--limit N] [--json]``: totals, examples with their variants, span check."""
    summary = "totals, examples next to their variants, and an answer-span check of an examples folder"
    parser = subparsers.add_parser("inspect", help=summary, description=f"{summary}; exit status 1 when an "
                                   "answer text is not found at its answer_start")
    parser.add_argument("path", type=Path, help="examples folder (shards/, meta.json; stats.json and rejects.jsonl "
                                                "when the augmentation stage wrote them)")
    parser.add_argument("--id", dest="example_id", help="show this example: an original id shows it and its variants")
    parser.add_argument("--limit", type=int, default=3, help="originals shown without --id (default 3)")
    parser.add_argument("--json", action="store_true", help="print one JSON object (totals, invalid_answer_spans, "
                                                            "examples shown with [original→replacement] markers)")
    parser.set_defaults(handler=_run_inspect)


def _run_inspect(args: argparse.Namespace) -> int:
    from augment.inspect import inspect_examples, print_report

    report = inspect_examples(args.path, args.example_id, args.limit)
    # colours and tables only on a terminal; piped output gets plain [original→replacement] markers
    mode = "json" if args.json else "rich" if sys.stdout.isatty() else "plain"
    print_report(report, mode)
    return 1 if report.invalid_span_count else 0


def add_run(subparsers: argparse._SubParsersAction) -> None:
    """``run --input DIR --out DIR [augment and resource options]``: the augmentation engine without a job."""
    import typing

    from augment.spec import AugmentSpec
    from core.config import DEFAULT_SEED
    from core.resources import ResourcesSpec

    summary = "augment an examples folder by word substitution (answers kept valid), resuming an unfinished --out"
    parser = subparsers.add_parser("run", help=summary, description=f"{summary}; prints the result as JSON. "
                                   "Unset options take the job spec defaults (augment/spec.py, core/resources.py).")
    parser.add_argument("--input", type=Path, required=True, help="examples folder (shards/, meta.json)")
    parser.add_argument("--out", type=Path, required=True, help="output folder; rerun to resume it")
    parser.add_argument("--task", choices=list(TRAITS), help="default: the task in the input's meta.json")
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED, help="default %(default)s")
    augment, resources = AugmentSpec.model_fields, ResourcesSpec.model_fields
    options = [  # (flag, field, type); each help text is the field's description in the spec
        ("--factor", augment["factor"], int), ("--top-k", augment["top_k"], int),
        ("--replace-prob", augment["replace_prob"], float), ("--mlm-model", augment["mlm_model"], str),
        ("--mlm-init", augment["mlm_init"], str), ("--mlm-mode", augment["mlm_mode"], str),
        ("--mlm-window", augment["mlm_window"], int), ("--mlm-batch-size", augment["mlm_batch_size"], int),
        ("--examples-per-shard", augment["examples_per_shard"], int),
        ("--workers", resources["workers"], int), ("--cpus-per-worker", resources["cpus_per_worker"], float),
        ("--gpus-per-worker", resources["gpus_per_worker"], float),
    ]
    for flag, field, kind in options:
        extra = " (here: 'none')" if flag == "--mlm-model" else ""
        choices = typing.get_args(field.annotation) if typing.get_origin(field.annotation) is typing.Literal else None
        parser.add_argument(flag, type=kind, choices=choices,
                            help=f"{field.description or ''}{extra} (default {field.default})")
    parser.add_argument("--vectors", help="word vectors file (GloVe, word2vec, fastText, .kv); default: train "
                                          "word2vec on the input")
    parser.add_argument("--vectors-format", help="glove, word2vec, word2vec_binary, fasttext or keyedvectors "
                                                 "(default: from the suffix)")
    parser.add_argument("--augment-questions", action="store_true", help=augment["augment_questions"].description)
    parser.add_argument("--augment-answers", action="store_true", help=augment["augment_answers"].description)
    parser.add_argument("--drop-original", action="store_true", help="write variants only, not the originals")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.set_defaults(handler=_run_augment)


def _run_augment(args: argparse.Namespace) -> int:
    import dataclasses
    import json
    import os

    from pydantic import ValidationError

    from augment.candidates import CandidateError
    from augment.pipeline import AugmentInputError, augment_examples
    from augment.spec import AugmentSpec
    from core.resources import ResourcesSpec

    given = {name: value for name, value in vars(args).items() if value is not None}
    augment = {k: given[k] for k in ("factor", "top_k", "replace_prob", "mlm_init", "mlm_mode", "mlm_window",
                                     "mlm_batch_size", "examples_per_shard") if k in given}
    if "mlm_model" in given:
        augment["mlm_model"] = None if given["mlm_model"].lower() == "none" else given["mlm_model"]
    vectors = {k: given[f"vectors{s}"] for k, s in (("path", ""), ("format", "_format")) if f"vectors{s}" in given}
    augment |= {"vectors": vectors, "augment_questions": args.augment_questions,
                "augment_answers": args.augment_answers, "keep_original": not args.drop_original}
    try:
        config = AugmentSpec.model_validate(augment, context={"base_dir": os.getcwd()})
        resources = ResourcesSpec.model_validate(
            {k: given[k] for k in ("workers", "cpus_per_worker", "gpus_per_worker") if k in given})
        task = args.task
        if task is None:
            meta = args.input / "meta.json"
            if not meta.exists():
                raise AugmentInputError(f"{meta} is missing, so the task is unknown; pass --task")
            task = json.loads(meta.read_text(encoding="utf-8"))["task"]
        result = augment_examples(args.input, task, config, resources, args.seed, args.out,
                                  progress=not args.quiet)
    except (ValidationError, AugmentInputError, CandidateError) as err:
        print(f"python -m augment run: error: {err}", file=sys.stderr)
        return 2
    print(json.dumps(dataclasses.asdict(result), indent=2))
    return 0


def add_export(subparsers: argparse._SubParsersAction) -> None:
    """``export PATH --format squad --out FILE``: an examples folder in a format other tools read."""
    from augment.export import EXPORT_FORMATS

    summary = "write an examples folder (read, augmented or labelled) as a SQuAD 2.0 JSON file"
    parser = subparsers.add_parser("export", help=summary, description=f"{summary}; variants keep their source_id, "
                                   "variant and substitutions, MRQA examples their gold_answers, as extra keys that "
                                   "SQuAD tools ignore and `read_examples` reads back")
    parser.add_argument("path", type=Path, help="examples folder (shards/)")
    parser.add_argument("--format", choices=EXPORT_FORMATS, default="squad", help="default %(default)s")
    parser.add_argument("--out", type=Path, required=True, help="the file to write (atomically)")
    parser.set_defaults(handler=_run_export)


def _run_export(args: argparse.Namespace) -> int:
    from augment.export import export_squad_json

    print(export_squad_json(args.path, args.out))
    return 0


SUBCOMMANDS = [
    add_inspect,
    add_run,
    add_export,
]

# Errors that come from what the user passed: printed as one line, not as a traceback.
_USER_ERRORS: tuple[type[Exception], ...] = (FileNotFoundError, InspectError, DataReadError, ExportError)


def build_parser() -> argparse.ArgumentParser:
    """The ``python -m augment`` parser with one subparser per entry of ``SUBCOMMANDS``."""
    parser = argparse.ArgumentParser(prog="python -m augment", description=__doc__.splitlines()[0])
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="SUBCOMMAND")
    for add in SUBCOMMANDS:
        add(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Parse `argv` (default: ``sys.argv[1:]``), run the chosen subcommand and return its exit status."""
    args = build_parser().parse_args(argv)
    try:
        return args.handler(args)
    except _USER_ERRORS as err:
        print(f"python -m augment {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
