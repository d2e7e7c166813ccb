"""`python -m jobs`: validate, submit, follow, cancel and resume distillation jobs.

Exit codes: 0 success, 1 the job failed or was cancelled, 2 a bad spec or bad arguments, 3 no such job.
"""

from __future__ import annotations

import argparse
import difflib
import json
import os
import shlex
import shutil
import signal
import sys
import textwrap
import time
from pathlib import Path
from typing import Any, Callable

from pydantic import BaseModel
from pydantic_core import to_jsonable_python

from core.locks import file_lock
from jobs.api import ACTIVE, default_root, effective_state, pid_alive, spawn
from jobs.spec import JobSpec, SpecError, dump_spec, load_spec
from jobs.stages import STAGE_NAMES, STAGES
from jobs.store import JobNotFound, Run, RunState, RunStore, folder_bytes, now

EXIT_OK, EXIT_FAILED, EXIT_BAD_SPEC, EXIT_NOT_FOUND = 0, 1, 2, 3


def _store(args: argparse.Namespace, spec: JobSpec | None = None) -> RunStore:
    return RunStore(Path(args.root) if args.root else default_root(spec))


def _load(args: argparse.Namespace, check_paths: bool = True) -> JobSpec:
    """The spec named on the command line, with its --set overrides and submit's --name applied (validated as the
    spec's own fields are)."""
    name = getattr(args, "name", None)
    overrides = [*args.set, f"name={json.dumps(name)}"] if name else args.set  # a JSON string is a YAML string
    return load_spec(args.spec, check_paths=check_paths, overrides=overrides)


def _report_spec_error(error: SpecError) -> int:
    print(f"error: invalid job spec {error.source}", file=sys.stderr)
    for problem in error.problems:
        print(f"  {problem}", file=sys.stderr)
    return EXIT_BAD_SPEC


# ---------------------------------------------------------------------------------------------------------------
# Commands

def _preflight(spec: JobSpec, source: str) -> float | None:
    """`jobs.preflight.check_job`: the seconds it took, or None after printing every problem (exit 2 follows)."""
    from jobs.preflight import check_job  # transformers: imported only when models are checked

    started = time.monotonic()
    problems = check_job(spec)
    if problems:
        print(f"error: {source}: {len(problems)} problem(s) between the job's models and data", file=sys.stderr)
        for problem in problems:
            print(f"  {problem}", file=sys.stderr)
        return None
    return time.monotonic() - started


def cmd_validate(args: argparse.Namespace) -> int:
    spec = _load(args)
    checked = ""
    if args.check_models:
        seconds = _preflight(spec, args.spec)
        if seconds is None:
            return EXIT_BAD_SPEC
        checked = f"; models and data fit together (checked in {seconds:.2f} s)"
    stages = [stage.name for stage in STAGES if stage.enabled(spec)]
    print(f"ok: {args.spec} is a valid {spec.task} job '{spec.name}' "
          f"({len(spec.teachers)} teacher(s), stages: {', '.join(stages)}){checked}")
    return EXIT_OK


def _run_in_foreground(run: Run, store: RunStore) -> int:
    from jobs.runner import run_job

    status = run_job(run, store)
    state = run.read_state()
    print(f"job {run.job_id}: {status} ({run.path})")
    if state.error:
        print(f"  {state.error}", file=sys.stderr)
    return EXIT_OK if status == "succeeded" else EXIT_FAILED


def _print_plan(args: argparse.Namespace, as_json: bool = False, train_examples: int | None = None) -> int:
    from jobs.plan import format_plan, plan_job  # reads data and model configs: transformers

    spec = _load(args)
    plan = plan_job(spec, _store(args, spec), train_examples)
    print(json.dumps(plan.to_json(), indent=2) if as_json else format_plan(plan))
    return EXIT_OK


def cmd_plan(args: argparse.Namespace) -> int:
    return _print_plan(args, args.json, args.train_examples)


def cmd_submit(args: argparse.Namespace) -> int:
    if args.dry_run:
        return _print_plan(args)
    spec = _load(args, check_paths=args.address is None)
    address = args.address or spec.resources.address
    # before anything is created; a cluster job's models and paths are the cluster's, so it is not checked here
    if not address:
        seconds = _preflight(spec, args.spec)
        if seconds is None:
            return EXIT_BAD_SPEC
        print(f"preflight: models and data fit together (checked in {seconds:.2f} s)", file=sys.stderr)
    store = _store(args, spec)
    job_id = store.new_job_id(spec.name)
    run = (store.create(job_id, dump_spec(spec), STAGE_NAMES, backend="ray", address=address, submission_id=job_id)
           if address else store.create(job_id, dump_spec(spec), STAGE_NAMES))
    if address:
        from jobs import cluster

        try:
            cluster.submit(address, run, store.root, job_id)
        except Exception:  # the cluster took no job: no run folder stays behind
            shutil.rmtree(run.path)
            raise
        print(f"submitted {job_id} to the Ray cluster at {address}; follow it with: python -m jobs logs "
              f"{job_id} --follow --root {shlex.quote(str(store.root))}")
        print(job_id)
        return EXIT_OK
    if args.detach:
        pid = spawn(run, store)
        print(f"started {job_id} (pid {pid}); follow it with: python -m jobs logs {job_id} --follow --root "
              f"{shlex.quote(str(store.root))}")
        print(job_id)
        return EXIT_OK
    print(f"running {job_id} in {run.path}", file=sys.stderr)
    return _run_in_foreground(run, store)


def cmd_run(args: argparse.Namespace) -> int:
    try:
        spec = _load(args)
    except SpecError as error:  # a detached job or a resume whose spec no longer loads (say, its data moved)
        if args.job_id and args.root and (Path(args.root) / args.job_id / "state.json").exists():
            RunStore(Path(args.root)).get(args.job_id).set_state(
                status="failed", ended_at=now(), error=f"the spec does not load: {'; '.join(error.problems)}")
        raise
    store = _store(args, spec)
    if args.job_id and (store.root / args.job_id / "state.json").exists():
        run = store.get(args.job_id)
    else:
        run = store.create(args.job_id or store.new_job_id(spec.name), dump_spec(spec), STAGE_NAMES)
    return _run_in_foreground(run, store)


def cmd_resume(args: argparse.Namespace) -> int:
    store = _store(args)
    run = store.get(args.job_id)
    state = effective_state(run)
    if state.status in ACTIVE or state.status == "unknown":
        where = f"pid {state.pid}" if state.backend != "ray" else f"Ray job {state.submission_id} at {state.address}"
        print(f"error: job {args.job_id} is {'still ' if state.status in ACTIVE else ''}{state.status} ({where}); "
              "cancel it first", file=sys.stderr)
        return EXIT_FAILED
    if state.status == "succeeded":
        print(f"job {args.job_id} already succeeded; nothing to resume")
        return EXIT_OK
    if state.backend == "ray":
        from jobs import cluster

        submission_id = f"{run.job_id}-resume-{int(time.time())}"
        cluster.submit(state.address, run, store.root, submission_id)
        run.set_state(submission_id=submission_id, resumed_at=now())
        print(f"resubmitted {run.job_id} to {state.address} as Ray job {submission_id}")
        return EXIT_OK
    run.set_state(status="pending", resumed_at=now())
    if args.detach:
        pid = spawn(run, store)
        print(f"resumed {run.job_id} (pid {pid})")
        print(run.job_id)
        return EXIT_OK
    return _run_in_foreground(run, store)


def cmd_list(args: argparse.Namespace) -> int:
    store = _store(args)
    # the name first: it is in the stored state, while a cluster job's status costs a request to its cluster
    states = [(run, effective_state(run)) for run in store.list() if args.name in (None, run.read_state().name)]
    states = [(run, state) for run, state in states if args.status in (None, state.status)]
    if args.json:
        print(json.dumps([{"job_id": run.job_id, "name": state.name, "status": state.status,
                           "created_at": state.created_at, "started_at": state.started_at,
                           "ended_at": state.ended_at, "run_dir": str(run.path)}
                          for run, state in states], indent=2))
        return EXIT_OK
    if not states:
        print(f"no jobs in {store.root}" + (" match" if args.name or args.status else ""))
        return EXIT_OK
    print(f"{'JOB ID':<44} {'STATUS':<12} {'STAGE':<22} CREATED")
    for run, state in states:
        stage = next((name for name, s in state.stages.items() if s.status in ("running", "failed",
                                                                                       "cancelled")), "")
        print(f"{run.job_id:<44} {state.status:<12} {stage:<22} {state.created_at}")
    return EXIT_OK


def cmd_status(args: argparse.Namespace) -> int:
    run = _store(args).get(args.job_id)
    state = effective_state(run)
    if args.json:
        print(state.model_dump_json(indent=2))
        return EXIT_OK
    print(f"job {state.job_id}: {state.status}" + (f" (pid {state.pid})" if state.pid else ""))
    if state.error:
        print(f"  error: {state.error}")
    if state.cluster_error:
        print(f"  {state.cluster_error}")
    for name, stage in state.stages.items():
        times = f"{stage.started_at or '':<26} {stage.ended_at or '':<26}"
        print(f"  {name:<22} {stage.status:<10} {times} {stage.output or ''}")
    for line in _evaluation_warnings(state):
        print(f"  warning: {line}")
    return EXIT_OK


def _evaluation_warnings(state: RunState) -> list[str]:
    """`jobs.report.evaluation_warnings` of the evaluate stage's metrics.json, once it is written."""
    evaluate = state.stages.get("evaluate")
    output = evaluate.output if evaluate is not None else None
    path = Path(output) / "metrics.json" if output else None
    if path is None or not path.is_file():
        return []
    from jobs.report import evaluation_warnings  # matplotlib and the export code: only when there are metrics

    return evaluation_warnings(json.loads(path.read_text(encoding="utf-8")))


def cmd_logs(args: argparse.Namespace) -> int:
    run = _store(args).get(args.job_id)
    state = run.read_state()
    if state.backend == "ray":
        from jobs import cluster

        if args.follow:
            for chunk in cluster.follow_logs(state.address, state.submission_id):
                print(chunk, end="", flush=True)
        else:
            print(cluster.logs(state.address, state.submission_id), end="")
        return EXIT_OK
    position = 0
    while True:
        if run.log_path.exists():
            with open(run.log_path, encoding="utf-8", errors="replace") as f:
                f.seek(position)
                chunk = f.read()
                position = f.tell()
            print(chunk, end="", flush=True)
        if not args.follow or effective_state(run).status not in ACTIVE:
            return EXIT_OK
        time.sleep(1.0)


def cmd_cancel(args: argparse.Namespace) -> int:
    run = _store(args).get(args.job_id)
    state = effective_state(run)
    if state.backend == "ray":
        from jobs import cluster

        try:
            cluster.stop(state.address, state.submission_id)
        except Exception as error:  # unreachable, or an error answer (a job a restarted head forgot)
            print(f"error: cannot stop Ray job {state.submission_id} at {state.address}: {error}", file=sys.stderr)
            return EXIT_FAILED
        print(f"asked the cluster to stop {args.job_id}")
        return EXIT_OK
    if state.status not in ACTIVE:
        print(f"job {args.job_id} is not running ({state.status}); nothing to cancel")
        return EXIT_OK
    pid = state.pid
    if pid_alive(pid):
        # a detached job leads its own process group (Ray's processes with it); one run in the foreground by a
        # script or `jobs.api` shares its caller's
        kill = os.killpg if _leads_its_group(pid) else os.kill
        kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + args.timeout
        while pid_alive(pid) and time.monotonic() < deadline:
            time.sleep(0.2)
        if pid_alive(pid):
            kill(pid, signal.SIGKILL)

    # the job marks itself and its stage cancelled on SIGTERM; this covers a job that had to be killed or never
    # started
    def mark_cancelled(s: RunState) -> None:
        if s.status in ACTIVE:
            s.set(status="cancelled", ended_at=now(), error=s.error or "cancelled")
            for stage in s.stages.values():
                if stage.status == "running":
                    stage.set(status="cancelled", ended_at=now(), error="cancelled")

    run.update_state(mark_cancelled)
    print(f"cancelled {args.job_id}")
    return EXIT_OK


def _leads_its_group(pid: int) -> bool:
    try:
        return os.getpgid(pid) == pid
    except ProcessLookupError:
        return False


def _megabytes(size: int) -> str:
    return f"{size / 1e6:,.1f} MB"


def cmd_rm(args: argparse.Namespace) -> int:
    store = _store(args)
    run = store.get(args.job_id)
    state = effective_state(run)
    if (state.status in ACTIVE or state.status == "unknown") and not args.force:
        print(f"error: job {args.job_id} is {state.status}; cancel it first (python -m jobs cancel "
              f"{args.job_id}), or delete it anyway with --force", file=sys.stderr)
        return EXIT_BAD_SPEC
    size = folder_bytes(run.path)
    shutil.rmtree(run.path)
    print(f"removed {args.job_id}: {_megabytes(size)} freed; the stage outputs it used stay in the cache until "
          "`python -m jobs gc` finds no job using them")
    return EXIT_OK


def cmd_gc(args: argparse.Namespace) -> int:
    store = _store(args)
    cutoff = time.time() - 86400 * args.older_than if args.older_than is not None else None
    freed, removed, kept_locked = 0, [], 0
    referenced = store.referenced_entries()   # every job's state, read once; a candidate is re-checked below
    for entry in store.cache_entries():
        if cutoff is not None and entry.path.stat().st_mtime > cutoff:
            continue
        if entry.path.resolve() in referenced:
            continue
        # under the entry's lock: a job that wants it now waits, then finds it gone and recomputes it
        with file_lock(entry.lock_path, wait=False) as free:
            if not free:
                kept_locked += 1   # a job is computing or reusing it right now
                continue
            if entry.path.resolve() in store.referenced_entries():   # claimed since the first look
                continue
            size = folder_bytes(entry.path)
            if not args.dry_run:
                shutil.rmtree(entry.path)
            freed += size
            removed.append(f"{entry.path.parent.name}/{entry.path.name}")
    verb = "would free" if args.dry_run else "freed"
    print(f"{verb} {_megabytes(freed)}: {len(removed)} cache entr{'y' if len(removed) == 1 else 'ies'} no job uses"
          + (f" (older than {args.older_than:g} days)" if cutoff is not None else "")
          + (f"; {kept_locked} in use by a running job kept" if kept_locked else ""))
    for name in removed:
        print(f"  {name}")
    return EXIT_OK


def _nested_model(annotation: Any) -> tuple[type[BaseModel] | None, str]:
    """The spec model inside a field's type (itself, a list of it, or an optional one) and its path suffix."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation, "."
    for inner in getattr(annotation, "__args__", ()):
        model, _ = _nested_model(inner)
        if model is not None:
            return model, "[]." if getattr(annotation, "__origin__", None) is list else "."
    return None, ""


def _field_rows(model: type[BaseModel], prefix: str) -> list[tuple[str, str, str]]:
    rows = []
    for name, field in model.model_fields.items():
        path = f"{prefix}{name}"
        nested, separator = _nested_model(field.annotation)
        if nested is not None and not (isinstance(field.default, BaseModel) or field.default is None
                                       or isinstance(field.default, list)):
            nested = None
        default = "required" if field.is_required() else json.dumps(to_jsonable_python(field.default))
        if nested is None or field.default is None or isinstance(field.default, list):
            rows.append((path, default, field.description or ""))
        if nested is not None:
            rows += _field_rows(nested, f"{path}{separator}")
    return rows


def cmd_explain(args: argparse.Namespace) -> int:
    every_row = _field_rows(JobSpec, "")
    rows = [r for r in every_row if r[0].startswith(args.section or "")]
    if not rows:
        # the sections too (`distill.prediction`), not only the leaf fields, so a misspelt section is found
        paths = {path.rsplit(".", depth)[0] for path, _, _ in every_row for depth in range(path.count(".") + 1)}
        nearest = difflib.get_close_matches(args.section, sorted(paths), n=5, cutoff=0.4)
        hint = f"; did you mean {', '.join(nearest)}?" if nearest else "; run `python -m jobs explain` for all of them"
        print(f"error: no spec field starts with {args.section!r}{hint}", file=sys.stderr)
        return EXIT_BAD_SPEC
    for path, default, description in rows:
        print(f"{path} = {default}")
        if description:
            print(textwrap.indent(textwrap.fill(description, 100), "    "))
    return EXIT_OK


def cmd_report(args: argparse.Namespace) -> int:
    from jobs.report import write_report

    run = _store(args).get(args.job_id)
    print(write_report(run.path))
    return EXIT_OK


# ---------------------------------------------------------------------------------------------------------------
# Parser

EXAMPLES = """\
examples:
  python -m jobs validate configs/quickstart.yaml
  python -m jobs validate configs/quickstart.yaml --check-models   # also models and data, against each other
  python -m jobs plan configs/squad2_tinybert_6l.yaml           # stages, cache hits, steps, disk, time; runs nothing
  python -m jobs submit configs/quickstart.yaml                 # run here, Ray in-process
  python -m jobs submit configs/quickstart.yaml --detach        # in the background; prints the job id last
  python -m jobs submit configs/squad2_tinybert_6l.yaml --address http://HEAD:8265   # on a Ray cluster
  python -m jobs list
  python -m jobs status JOB_ID --json
  python -m jobs logs JOB_ID --follow
  python -m jobs cancel JOB_ID
  python -m jobs resume JOB_ID
  python -m jobs report JOB_ID
  python -m jobs rm JOB_ID
  python -m jobs gc --older-than 7
"""


def _command(sub: Any, name: str, handler: Callable[[argparse.Namespace], int], help_text: str,
             example: str) -> argparse.ArgumentParser:
    parser = sub.add_parser(name, help=help_text, description=help_text, epilog=f"example:\n  {example}",
                            formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", help="run store folder (default: $DISTILLERY_ROOT, the spec's output.root, "
                                       "or ./runs)")
    parser.set_defaults(handler=handler)
    return parser


def _spec_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("spec", help="YAML job spec")
    parser.add_argument("--set", action="append", default=[], metavar="KEY.PATH=VALUE",
                        help="override a spec field, value read as YAML; repeatable (e.g. --set seed=3 "
                             "--set teachers.0.model=/models/teacher); relative paths are read from the spec's "
                             "folder")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m jobs", description="Distillery jobs: augment, label, distill, evaluate.",
        epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = _command(sub, "validate", cmd_validate, "check a job spec without running anything",
                 "python -m jobs validate configs/quickstart.yaml --check-models")
    _spec_arguments(p)
    p.add_argument("--check-models", action="store_true",
                   help="also load every model's config and tokenizer (no weights) and the head of each data file, "
                        "and check that they fit together: tokenization, max_seq_len, classes and their order, data "
                        "format, layer map, hub names (seconds; submit runs the same checks)")

    p = _command(sub, "explain", cmd_explain, "list every spec field with its default and meaning",
                 "python -m jobs explain distill.prediction")
    p.add_argument("section", nargs="?", help="only fields under this path, e.g. augment or distill.prediction")

    p = _command(sub, "submit", cmd_submit, "validate a spec and run it as a new job",
                 "python -m jobs submit configs/quickstart.yaml --detach")
    _spec_arguments(p)
    p.add_argument("--address", help="Ray Jobs address of a cluster (http://HEAD:8265); default: run here")
    p.add_argument("--detach", action="store_true", help="run in the background and print the job id last")
    p.add_argument("--name", help="job name (prefix of the job id); default: the spec's name")
    p.add_argument("--dry-run", action="store_true", help="print the job's plan (as `plan`) and run nothing")

    p = _command(sub, "plan", cmd_plan, "say what a spec would run and cost: stages with cache hits, examples, "
                 "features, optimizer steps, disk and a rough time; creates nothing",
                 "python -m jobs plan configs/squad2_tinybert_6l.yaml")
    _spec_arguments(p)
    p.add_argument("--json", action="store_true", help="print the plan as JSON")
    p.add_argument("--train-examples", type=int, metavar="N",
                   help="the training set's size, for data that cannot be read here (a hub data set offline)")

    p = _command(sub, "run", cmd_run, "run a spec in this process (the entrypoint a cluster runs)",
                 "python -m jobs run spec.yaml --job-id quickstart-20260101-120000-abc123")
    _spec_arguments(p)
    p.add_argument("--job-id", help="continue this job if it exists, else create it under this id")

    p = _command(sub, "list", cmd_list, "list jobs in the run store", "python -m jobs list --status failed --json")
    p.add_argument("--json", action="store_true", help="print a JSON array: job_id, name, status, created_at, "
                                                       "started_at, ended_at, run_dir")
    p.add_argument("--status", help="only jobs with this status (pending, running, succeeded, failed, cancelled, "
                                    "interrupted, unknown)")
    p.add_argument("--name", help="only jobs with this name (the job id without its time stamp)")

    p = _command(sub, "status", cmd_status, "show a job's status and its stages", "python -m jobs status ID --json")
    p.add_argument("job_id")
    p.add_argument("--json", action="store_true", help="print the state as JSON")

    p = _command(sub, "logs", cmd_logs, "print a job's log", "python -m jobs logs ID --follow")
    p.add_argument("job_id")
    p.add_argument("--follow", "-f", action="store_true", help="keep printing until the job ends")

    p = _command(sub, "cancel", cmd_cancel, "stop a running job", "python -m jobs cancel ID")
    p.add_argument("job_id")
    p.add_argument("--timeout", type=float, default=30.0, help="seconds to wait before killing it")

    p = _command(sub, "resume", cmd_resume, "continue a failed, cancelled or interrupted job from its first "
                 "incomplete stage", "python -m jobs resume ID")
    p.add_argument("job_id")
    p.add_argument("--detach", action="store_true", help="resume in the background")

    p = _command(sub, "report", cmd_report, "(re)write a job's Markdown report and plots",
                 "python -m jobs report ID")
    p.add_argument("job_id")

    p = _command(sub, "rm", cmd_rm, "delete a job's folder (not running); its cache entries go with `gc`",
                 "python -m jobs rm ID")
    p.add_argument("job_id")
    p.add_argument("--force", action="store_true",
                   help="delete it even while its status is active or unknown (say, a cluster job the cluster no "
                        "longer knows); a job still running would lose its folder")

    p = _command(sub, "gc", cmd_gc, "delete the cache entries no job in the run store uses, saying what it frees",
                 "python -m jobs gc --older-than 7")
    p.add_argument("--older-than", type=float, metavar="DAYS", help="only entries last changed this many days ago")
    p.add_argument("--dry-run", action="store_true", help="say what would be deleted, delete nothing")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.handler(args)
    except SpecError as error:
        return _report_spec_error(error)
    except JobNotFound as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_NOT_FOUND
