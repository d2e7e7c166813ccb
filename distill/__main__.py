"""Command line for Distillery: ``python -m distill <subcommand> [options]``; ``--help`` lists the subcommands.

Each subcommand is one entry in ``SUBCOMMANDS``: a help line, a function that declares its options on an argparse
parser, and a function that runs it and returns the exit status. To add one, write those two functions and
register them; import heavy modules (torch, transformers) inside the run function so that other subcommands stay
quick to start.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from core.tasks import TRAITS, task_traits
from distill.squad_metric import DEFAULT_NA_PROB_THRESH, SquadFormatError, squad_scores


class InputFileError(ValueError):
    """A file named on the command line cannot be read or is not valid JSON."""


@dataclass(frozen=True)
class Subcommand:
    """One ``python -m distill`` subcommand.

    Attributes:
        help: the one-line summary shown by ``python -m distill --help``.
        add_arguments: declares the subcommand's options on its own parser.
        run: runs the subcommand with the parsed options and returns the process exit status.
    """

    help: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]


def _read_json(path: str, option: str) -> Any:
    """The parsed JSON file at ``path``, named in errors by the ``option`` that gave it."""
    try:
        with open(path, encoding="utf-8") as handle:
            return json.load(handle)
    except OSError as err:
        raise InputFileError(f"cannot read {option} {path}: {err.strerror}") from err
    except json.JSONDecodeError as err:
        raise InputFileError(f"{option} {path} is not valid JSON: {err}") from err


def _add_squad_metric_arguments(parser: argparse.ArgumentParser) -> None:
    """Declare the ``squad-metric`` options on ``parser``."""
    parser.add_argument("--data", required=True, help="SQuAD dataset JSON (1.1 or 2.0, detected from the file)")
    parser.add_argument("--predictions", required=True, help='predictions JSON: {question id: answer text or ""}')
    parser.add_argument(
        "--na-probs", help="null odds JSON: {question id: number}, higher = more likely unanswerable (SQuAD 2.0)"
    )
    parser.add_argument(
        "--na-prob-thresh",
        type=float,
        help=f"count an answer as 'no answer' when its null odds exceed this (SQuAD 2.0; "
        f"default {DEFAULT_NA_PROB_THRESH}, as the official script)",
    )
    parser.add_argument("--out-file", help="write the scores as JSON here instead of printing them")


def _run_squad_metric(args: argparse.Namespace) -> int:
    """Score ``args.predictions`` against ``args.data`` and print or write the official scores JSON."""
    dataset = _read_json(args.data, "--data")
    predictions = _read_json(args.predictions, "--predictions")
    na_probs = None if args.na_probs is None else _read_json(args.na_probs, "--na-probs")
    scores = squad_scores(dataset, predictions, na_probs, args.na_prob_thresh)
    # Same output as the official script: compact JSON into --out-file, else indented JSON on stdout.
    if args.out_file:
        with open(args.out_file, "w", encoding="utf-8") as handle:
            json.dump(scores, handle)
    else:
        print(json.dumps(scores, indent=2))
    return 0


def _add_evaluate_arguments(parser: argparse.ArgumentParser) -> None:
    """Declare the ``evaluate`` options on ``parser``; unset options take the job spec's defaults."""
    parser.add_argument("model", metavar="MODEL",
                        help="model folder (or cached hub name) with a QA or classification head, or an .onnx graph "
                             "written by export-onnx")
    parser.add_argument("--data", required=True, help="evaluation data: SQuAD JSON, TSV/CSV/JSONL file or HF dataset")
    parser.add_argument("--format", choices=["squad", "tsv", "csv", "jsonl", "hf"], help="default: from the suffix")
    parser.add_argument("--split", help="split of an HF dataset (e.g. validation)")
    parser.add_argument("--task", choices=list(TRAITS), help="default: from the model's head")
    parser.add_argument("--text-column", help="classification: column holding the text (default: sentence)")
    parser.add_argument("--text-pair-column", help="classification: column holding the second text")
    parser.add_argument("--label-column", help="classification: column holding the label (default: label)")
    parser.add_argument("--label-names", help="classification: comma-separated label names in id order "
                        "(default: the model's id2label, unless it is the generic LABEL_0, LABEL_1, ...)")
    parser.add_argument("--limit", type=int, help="evaluate only the first N examples")
    parser.add_argument("--max-seq-len", type=int, help="tokens per window (default: the exported model's "
                        "setting, else 384)")
    parser.add_argument("--doc-stride", type=int, help="QA: overlap between context windows (default: the "
                        "export's, else 128)")
    parser.add_argument("--max-query-len", type=int, help="QA: question tokens kept (default: the export's, else 64)")
    parser.add_argument("--batch-size", type=int, help="features per forward pass (default: 64)")
    parser.add_argument("--null-threshold", type=float, help="QA: answer \"\" when null - best span score > this "
                        "(default: the export's, else 0.0)")
    parser.add_argument("--speed", action="store_true", help="also measure size, latency and throughput")
    parser.add_argument("--cpu", action="store_true", help="run on the CPU even when a GPU is present")
    parser.add_argument("--name", default="model", help="the model's name in metrics.json and its output folder")
    parser.add_argument("--out", default="evaluation", help="output folder (default: ./evaluation)")
    parser.add_argument("--json", action="store_true", help="print the metrics as JSON instead of a summary table")


def _given(args: argparse.Namespace, **names: str) -> dict[str, Any]:
    """``{spec field: value}`` for the options (``field=option attribute``) given on the command line."""
    return {field: getattr(args, option) for field, option in names.items() if getattr(args, option) is not None}


def _run_evaluate(args: argparse.Namespace) -> int:
    """Read ``args.data`` into a temp examples folder, evaluate ``args.model`` on it and print its metrics."""
    import shutil
    import tempfile
    from pathlib import Path

    if args.model.startswith((".", "/", "~")) and not Path(args.model).expanduser().exists():
        print(f"python -m distill evaluate: error: no model folder {args.model}", file=sys.stderr)
        return 2

    from pydantic import ValidationError

    from augment.readers import DataReadError, read_examples
    from augment.spec import DataSource
    from core.resources import ResourcesSpec
    from distill.evaluate import EvaluationError, evaluate_models
    from distill.export import saved_settings
    from distill.models import ModelCheckError, ModelRef, load_config, task_of
    from distill.spec import EvaluateSpec, FeaturesSpec

    try:
        ref = ModelRef(str(Path(args.model).expanduser()) if args.model.startswith("~") else args.model)
        config = load_config(ref)
        task = args.task or task_of(config, args.model)
        label_names = args.label_names.split(",") if args.label_names else None
        if task_traits(task).classes and label_names is None:
            names = [config.id2label[i] for i in range(config.num_labels)]
            label_names = None if names == [f"LABEL_{i}" for i in range(len(names))] else names
        saved = saved_settings(config, task)
        for option, key in (("max_seq_len", "max_seq_len"), ("doc_stride", "doc_stride"),
                            ("max_query_len", "max_question_len"), ("null_threshold", "null_threshold")):
            if getattr(args, option) is None and key in saved:
                setattr(args, option, saved[key])
        answer_settings = {key: saved[key] for key in ("max_answer_len", "n_best") if key in saved}
        source = DataSource(path=args.data, **_given(args, format="format", split="split", limit="limit",
                                                      text_column="text_column", label_column="label_column",
                                                      text_pair_column="text_pair_column"))
        features = FeaturesSpec(**_given(args, max_seq_len="max_seq_len", doc_stride="doc_stride",
                                         max_query_len="max_query_len"))
        evaluate = EvaluateSpec(measure_speed=args.speed, evaluate_teachers=False, export=False, **answer_settings,
                                **_given(args, batch_size="batch_size", null_threshold="null_threshold"))
        resources = ResourcesSpec(gpus_per_worker=0 if args.cpu else None)
        out_dir = Path(args.out)
        with tempfile.TemporaryDirectory(prefix="distill-evaluate-") as temp:
            examples_dir = Path(temp) / "examples"
            read = read_examples(source, task, label_names, examples_dir)
            if read.rejected:
                out_dir.mkdir(parents=True, exist_ok=True)
                shutil.copy(read.rejects_path, out_dir / "rejects.jsonl")
                print(f"{read.rejected} of {read.read} records rejected ({read.rejected_by_reason}); see "
                      f"{out_dir / 'rejects.jsonl'}", file=sys.stderr)
            result = evaluate_models({args.name: ref}, task, examples_dir, features, evaluate, resources, out_dir,
                                     label_names=read.label_names, progress=sys.stderr.isatty())
    except ValidationError as err:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'options'}: {e['msg']}" for e in err.errors())
        print(f"python -m distill evaluate: error: {problems}", file=sys.stderr)
        return 2
    except (OSError, DataReadError, EvaluationError, ModelCheckError) as err:
        print(f"python -m distill evaluate: error: {err}", file=sys.stderr)
        return 2
    metrics = json.loads(Path(result.metrics_path).read_text(encoding="utf-8"))[args.name]
    print(json.dumps(metrics, indent=2) if args.json else _summary(task, metrics, result.models[args.name]))
    print(f"wrote {result.metrics_path} and {Path(result.models[args.name].predictions_path).parent}/",
          file=sys.stderr)
    return 0


def _summary(task: str, metrics: dict[str, Any], evaluation: Any) -> str:
    """The headline scores as an aligned two-column table."""
    if task_traits(task).windows:
        rows = [("exact match", metrics["exact"]), ("F1", metrics["f1"])]
        for group, label in (("HasAns", "answerable"), ("NoAns", "unanswerable")):
            if f"{group}_total" in metrics:
                rows += [(f"exact / F1, {label} ({metrics[f'{group}_total']})",
                          f"{metrics[f'{group}_exact']:.2f} / {metrics[f'{group}_f1']:.2f}")]
        rows += [("best F1 (threshold)", f"{metrics['best_f1']:.2f} ({metrics['best_f1_thresh']:.3g})")]
    elif task_traits(task).classes:
        rows = [("accuracy", metrics["accuracy"]), ("macro F1", metrics["macro_f1"])]
        rows += [(f"F1 {name} ({entry['support']})", entry["f1"]) for name, entry in metrics["per_class"].items()]
    else:
        rows = [(name, metrics[name]) for name in task_traits(task).macro_metrics]
        rows += [("mean squared error", metrics["mse"])]
    for device, report in (metrics.get("speed") or {}).items():
        rows += [(f"latency b1, {device} (ms)", report["latency_ms"]),
                 (f"throughput b32, {device} (ex/s)", report["throughput"])]
    rows += [("examples / features", f"{evaluation.examples:,} / {evaluation.features:,}")]
    if metrics.get("degenerate"):
        rows += [("warning", metrics["degenerate"])]
    width = max(len(name) for name, _ in rows)
    return "\n".join(f"{name:<{width}}  {value:.2f}" if isinstance(value, float) else f"{name:<{width}}  {value}"
                     for name, value in rows)


def _add_answer_arguments(parser: argparse.ArgumentParser) -> None:
    """Declare the ``answer`` options on ``parser``."""
    parser.add_argument("model", metavar="MODEL", help="QA model folder (an export, a student) or cached hub name")
    given = parser.add_mutually_exclusive_group(required=True)
    given.add_argument("--question", help="the question (with --context)")
    given.add_argument("--file", help='JSONL file, one {"question": ..., "context": ..., "id": optional} per line')
    parser.add_argument("--context", help="the text to find the answer in (with --question)")
    parser.add_argument("--json", action="store_true", help="one JSON object per answer instead of a table")
    parser.add_argument("--null-threshold", type=float, help="answer \"\" when null odds exceed this (default: "
                        "the model's evaluated setting)")
    parser.add_argument("--max-answer-len", type=int, help="longest answer in tokens (default: the model's setting)")
    parser.add_argument("--cpu", action="store_true", help="run on the CPU even when a GPU is present")


def _questions_file(path: str) -> list[dict[str, Any]]:
    rows = []
    try:
        with open(path, encoding="utf-8") as handle:
            for number, line in enumerate(handle, start=1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as err:
                    raise InputFileError(f"--file {path}, line {number}: not valid JSON ({err})") from err
                if not isinstance(row, dict):
                    raise InputFileError(f"--file {path}, line {number}: expected an object with question and "
                                         "context")
                rows.append(row)
    except OSError as err:
        raise InputFileError(f"cannot read --file {path}: {err.strerror}") from err
    return rows


def _run_answer(args: argparse.Namespace) -> int:
    """Answer one question or a JSONL file of them with the model, as the evaluation would."""
    from pathlib import Path

    if args.question is not None and args.context is None:
        raise InputFileError("--question needs --context")
    questions = (_questions_file(args.file) if args.file
                 else [{"id": "0", "question": args.question, "context": args.context}])
    looks_local = args.model.startswith((".", "/", "~")) or Path(args.model).exists()
    if looks_local and not (Path(args.model).expanduser() / "config.json").is_file():
        raise InputFileError(f"no model in {args.model}: it holds no config.json")

    from distill.answer import AnswerError, QuestionAnswerer

    try:
        answerer = QuestionAnswerer(Path(args.model).expanduser() if looks_local else args.model, cpu=args.cpu,
                                    null_threshold=args.null_threshold, max_answer_len=args.max_answer_len)
        answers = list(answerer.answer(questions))
    except (AnswerError, OSError) as err:
        print(f"python -m distill answer: error: {err}", file=sys.stderr)
        return 2
    if args.json:
        for answer in answers:
            print(json.dumps(asdict(answer)))
    else:
        print("id\tanswer\tscore\tnull odds")
        for answer in answers:
            print(f"{answer.id}\t{answer.answer or '(no answer)'}\t{answer.score:.3f}\t{answer.null_odds:.3f}")
    return 0


def _add_export_onnx_arguments(parser: argparse.ArgumentParser) -> None:
    """Declare the ``export-onnx`` options on ``parser``."""
    parser.add_argument("model", metavar="MODEL", help="exported student folder (or any QA/classification folder)")
    parser.add_argument("--out", help="output folder (default: MODEL/onnx)")
    parser.add_argument("--no-int8", action="store_true", help="skip the int8 dynamically quantized copy")


def _run_export_onnx(args: argparse.Namespace) -> int:
    """Write MODEL's ONNX graphs (fp32, int8), checked against PyTorch."""
    from pathlib import Path

    if not (Path(args.model) / "config.json").is_file():
        raise InputFileError(f"no model in {args.model}: it holds no config.json")
    from distill.models import ModelCheckError
    from distill.onnx_export import OnnxExportError, export_onnx

    try:
        files = export_onnx(Path(args.model), quantize=not args.no_int8,
                            out_dir=Path(args.out) if args.out else None)
    except (OnnxExportError, ModelCheckError, ImportError) as err:
        print(f"python -m distill export-onnx: error: {err}", file=sys.stderr)
        return 2
    for path in (files.fp32, files.int8):
        if path is not None:
            print(f"{path}  {path.stat().st_size / 1e6:.1f} MB")
    print(f"fp32 logits within {files.max_abs_diff:.1e} of PyTorch; evaluate either graph with "
          f"python -m distill evaluate {files.fp32} --data ...", file=sys.stderr)
    return 0


SUBCOMMANDS: dict[str, Subcommand] = {
    "squad-metric": Subcommand(
        help="official SQuAD 1.1 / 2.0 exact match and F1 of a predictions file",
        add_arguments=_add_squad_metric_arguments,
        run=_run_squad_metric,
    ),
    "evaluate": Subcommand(
        help="score a model folder on a data file (SQuAD 2.0 metric or accuracy/macro-F1), optionally its speed",
        add_arguments=_add_evaluate_arguments,
        run=_run_evaluate,
    ),
    "answer": Subcommand(
        help="answer questions about a context with a QA model folder, as the evaluation does",
        add_arguments=_add_answer_arguments,
        run=_run_answer,
    ),
    "export-onnx": Subcommand(
        help="write a model folder as ONNX (fp32 and int8) for onnxruntime, checked against PyTorch",
        add_arguments=_add_export_onnx_arguments,
        run=_run_export_onnx,
    ),
}

# Errors that come from what the user passed: printed as one line, not as a traceback. A new subcommand adds
# the typed input errors of the stages it calls here.
_USER_ERRORS: tuple[type[Exception], ...] = (InputFileError, SquadFormatError)


def build_parser() -> argparse.ArgumentParser:
    """The ``python -m distill`` parser with one subparser per entry of ``SUBCOMMANDS``."""
    parser = argparse.ArgumentParser(prog="python -m distill", description="Distillery command line.")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="SUBCOMMAND")
    for name, subcommand in SUBCOMMANDS.items():
        subparser = subparsers.add_parser(name, help=subcommand.help, description=subcommand.help)
        subcommand.add_arguments(subparser)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Parse ``argv`` (default: ``sys.argv[1:]``), run the chosen subcommand and return its exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return SUBCOMMANDS[args.command].run(args)
    except _USER_ERRORS as err:
        print(f"python -m distill {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
