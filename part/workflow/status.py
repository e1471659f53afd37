"""Where every run of a grid stands, from its files alone (``part status``).

A grid of hundreds of jobs runs for days; what a researcher asks of it — how far each run is, what failed
and why, what is stuck, when it will end — is spread over each run's ``log.jsonl``, its lock files and its
job logs under ``logs/``. This module reads those files and nothing else: no torch (a login node answers in
a fraction of a second, while the grid writes), no scheduler, no Snakemake.

A run's state, first match wins:

* ``training`` / ``evaluating``: a live writer holds its lock (``<run>/.lock``, ``eval*/.<attack>.lock``);
* ``stalled``: a lock whose writer is gone from this host or whose lease ran out (``part.base.lock``);
* ``done``: its merged metrics (``metrics.json`` of the tables' checkpoint) exist;
* ``failed``: the last attempt of one of its job logs ended in an error (``part.workflow.joblog``);
* ``trained``: its final weights exist, its evaluation has not finished and nothing evaluates it;
* ``stopped``: epochs are logged, nothing trains it (a job stopped between attempts, or a ``part train``
  interrupted by hand);
* ``not started``.

What is left of a run is costed like ``part plan`` costs a job (``part.workflow.plan``): training from its own
seconds per epoch where it logged any, else from a throughput file or the shipped rates; each evaluation
job not yet written from those rates. Seconds are a job's wall clock (a throughput file's device-seconds
over the GPUs the job asks for); the grid's ETA spreads the sum over the jobs running now.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from part.base import lock
from part.base.grid import Grid, Run, job_resources
from part.base.rundir import RunPaths, eval_dir_name, read_log_so_far
from part.workflow import joblog, plan

STATES = ("not started", "training", "stopped", "trained", "evaluating", "done", "failed", "stalled")
RUNNING = ("training", "evaluating")


@dataclass(frozen=True)
class RunStatus:
    """One run's state, its last epoch's numbers and the wall-clock seconds its jobs still need
    (``train_left`` / ``eval_left``: None where nothing can cost them)."""
    path: str
    dataset: str
    variant: str
    seed: int
    state: str
    detail: str
    trained: bool
    epochs_done: int
    epochs: int
    loss: float | None
    val_natural: float | None
    val_robust: float | None
    seconds_per_epoch: float | None
    train_left: float | None
    eval_left: float | None
    eval_jobs: int
    eval_jobs_done: int
    job_log: str | None = None
    next_step: str | None = None

    @property
    def left(self) -> float | None:
        """Seconds until the run is evaluated, were its jobs run one after the other from now."""
        parts = [self.train_left, self.eval_left]
        return None if None in parts else sum(parts)


def job_logs(logs: Path, rules: Iterable[str], run: Run) -> list[Path]:
    """The run's job logs: the workflow's rules write them to ``logs/<rule>/<run path>.log``, or, for a
    job per attack or check, ``logs/<rule>/<run path>/<name>.log``."""
    found = []
    for rule in rules:
        one = logs / rule / f"{run.path}.log"
        found += [one] if one.is_file() else []
        per = logs / rule / run.path
        found += sorted(per.glob("*.log")) if per.is_dir() else []
    return found


def _failure(paths: list[Path]) -> tuple[str, Path] | None:
    """The newest job log whose last attempt failed: its failure line and path."""
    failed = []
    for path in paths:
        try:
            line = joblog.last_failure(path.read_text(errors="replace"))
        except FileNotFoundError:  # removed since it was listed
            continue
        if line is not None:
            failed.append((path.stat().st_mtime, line, path))
    if not failed:
        return None
    _, line, path = max(failed, key=lambda f: f[0])
    return line, path


def _holders(root: Path) -> list[tuple[str, dict[str, Any]]]:
    """The locks held in a run directory, as (what it guards, its holder): ``train`` or an attack's name."""
    held = []
    for what, path in [("train", RunPaths(root).lock),
                       *((p.name[1:-len(".lock")], p) for p in sorted(root.glob("eval*/.*.lock")))]:
        if (holder := lock.read_holder(path)) is not None:
            held.append((what, holder))
    return held


def _stalled(what: str, holder: dict[str, Any], why: str, root: Path) -> tuple[str, str]:
    job = "training" if what == "train" else f"evaluation of {what}"
    detail = f"{job}: lock held by host {holder['host']}, PID {holder['pid']} ({holder['purpose']}), but {why}"
    step = (f"make sure PID {holder['pid']} no longer runs on {holder['host']}, then rerun the workflow (or "
            f"`part train`): the next writer takes the lock over and resumes from {root}/checkpoint.pt"
            if what == "train" else
            f"make sure PID {holder['pid']} no longer runs on {holder['host']}, then rerun the workflow: the next "
            f"evaluation of {what} takes the lock over")
    return detail, step


def _fix(line: str, log: Path) -> str:
    """What to do about a failed job, by how its log says it ended."""
    if "stopped by SIGTERM" in line:
        return ("the job was stopped (time limit, scancel or preemption): rerun the workflow; training resumes "
                "from its checkpoint (raise resources.<stage>.runtime if it keeps hitting the limit)")
    if "job refused" in line:
        return f"the job asked for what this machine lacks (see {log}): fix resources or the device, then rerun"
    return f"read {log}, fix the cause, then rerun the workflow (a training run resumes from its checkpoint)"


def _job_seconds(g: Grid, run: Run, stage: plan.Stage, sources: list[plan.Throughput]) -> float | None:
    """A job's wall-clock seconds from the first source that costs it: device-seconds over its GPUs."""
    gpus = max(job_resources(g.cfg, stage.resource, run.dataset)["gpu"], 1)
    for t in sources:
        if (seconds := plan.throughput_seconds(g, run, stage, t)) is not None:
            return seconds / gpus
    return None


def _sum(values: list[float | None]) -> float | None:
    return None if None in values else sum(v for v in values if v is not None)


def run_status(g: Grid, run: Run, eval_stages: list[plan.Stage], logs: Path, rules: list[str],
               sources: list[plan.Throughput]) -> RunStatus:
    """Where one run stands (see the module's docstring for the states' order)."""
    root = g.run_dir(run)
    paths = RunPaths(root)
    records = read_log_so_far(root)
    epochs, last = run.config.epochs, (records[-1] if records else {})
    trained = paths.model.is_file() and paths.run.is_file()
    if trained:
        train_left: float | None = 0.0
    elif records:
        train_left = plan.remaining_seconds(run.config, records)
    else:
        train_left = _job_seconds(g, run, plan.Stage("train"), sources)
    pending = [s for s in eval_stages if plan.measured_seconds(g, run, s) is None]
    eval_left = _sum([_job_seconds(g, run, s, sources) for s in pending])

    state, detail, job_log, step = _state(g, run, root, records, trained, logs, rules)
    seconds = [r["seconds"] for r in records if "seconds" in r]
    return RunStatus(run.path, run.dataset, run.variant, run.seed, state, detail, trained, len(records), epochs,
                     last.get("loss"), last.get("val_natural"), last.get("val_robust"),
                     sum(seconds) / len(seconds) if seconds else None, train_left, eval_left,
                     sum(s.own_jobs for s in eval_stages), sum(s.own_jobs for s in eval_stages if s not in pending),
                     job_log, step)


def _state(g: Grid, run: Run, root: Path, records: list[dict[str, Any]], trained: bool, logs: Path,
           rules: list[str]) -> tuple[str, str, str | None, str | None]:
    """(state, detail, job log, next step) of a run."""
    epochs = run.config.epochs
    holders = _holders(root)
    for what, holder in holders:
        if (why := lock.stale_reason(holder)) is not None:
            detail, step = _stalled(what, holder, why, root)
            return "stalled", detail, None, step
    live = [what for what, _ in holders]
    if "train" in live:
        return "training", f"epoch {min(len(records) + 1, epochs)} of {epochs}", None, None
    if live:
        running = [a for a in live if not (root / eval_dir_name(g.checkpoint) / f"{a}.json").is_file()] or live
        return "evaluating", ", ".join(running), None, None
    if (root / g.metrics_name).is_file():
        return "done", f"{epochs} epochs, evaluated", None, None
    if (failure := _failure(job_logs(logs, rules, run))) is not None:
        line, path = failure
        return "failed", line, str(path), _fix(line, path)
    if trained:
        return "trained", f"{epochs} epochs; evaluation not finished, nothing evaluates it now", None, None
    if records:
        return "stopped", f"after epoch {len(records)} of {epochs}; nothing trains it now", None, None
    return "not started", "", None, None


@dataclass(frozen=True)
class GridStatus:
    """Every run's status, the count of runs in each state, the work left and when it ends."""
    runs: list[RunStatus]
    counts: dict[str, int]
    stages: dict[str, dict[str, Any]]
    left: float | None
    running: int
    eta_seconds: float | None
    read_at: float

    def to_json(self) -> dict[str, Any]:
        return {"runs": [{**asdict(r), "left": r.left} for r in self.runs], "counts": self.counts,
                "stages": self.stages, "left_seconds": self.left, "running": self.running,
                "eta_seconds": self.eta_seconds, "read_at": self.read_at}


def grid_status(g: Grid, logs: str | Path = "logs", throughput: Iterable[plan.Throughput] = ()) -> GridStatus:
    """Every run of ``g`` (main table, then experiments), its job logs read below ``logs``; work left costed
    by the runs' own logs, then ``throughput``, then the shipped rates.

    The grid's ETA is the work left over the jobs running now (at least one): the pace of the moment,
    not a schedule; it is None while some job has no cost."""
    sources = [*throughput, plan.shipped_estimate()]
    logs = Path(logs)
    rules = sorted(p.name for p in logs.iterdir() if p.is_dir()) if logs.is_dir() else []
    eval_stages: dict[str, list[plan.Stage]] = {}
    for dataset in g.datasets:
        for stage, runs in plan.stages(g, dataset):
            for run in runs if stage.attacks else ():
                eval_stages.setdefault(run.path, []).append(stage)
    runs = [run_status(g, run, eval_stages.get(run.path, []), logs, rules, sources) for run in g.runs.values()]
    counts = {state: n for state in STATES if (n := sum(r.state == state for r in runs))}
    left = _sum([r.left for r in runs])
    running = sum(r.state in RUNNING for r in runs)
    return GridStatus(runs, counts, stage_totals(runs), left, running,
                      None if left is None else left / max(running, 1), time.time())


def stage_totals(runs: list[RunStatus]) -> dict[str, dict[str, Any]]:
    """Per stage: jobs finished of all, epochs (training), and the wall-clock seconds left (None: uncosted)."""
    return {"train": {"jobs": len(runs), "done": sum(r.trained for r in runs),
                      "epochs": sum(r.epochs for r in runs),
                      "epochs_done": sum(min(r.epochs_done, r.epochs) for r in runs),
                      "left_seconds": _sum([r.train_left for r in runs])},
            "evaluate": {"jobs": sum(r.eval_jobs for r in runs), "done": sum(r.eval_jobs_done for r in runs),
                         "left_seconds": _sum([r.eval_left for r in runs])}}


def duration(seconds: float | None) -> str:
    """Seconds as the unit a reader plans with: s, min, h or days; ``?`` where nothing costs them."""
    if seconds is None:
        return "?"
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= 2 * size:
            return f"{seconds / size:.1f} {unit}"
    return f"{seconds:.0f} s"


def _numbers(r: RunStatus) -> str:
    cells = [f"loss {r.loss:.4f}" if r.loss is not None else "",
             f"val {r.val_natural:.1f}/{r.val_robust:.1f}%" if r.val_robust is not None else "",
             f"{r.seconds_per_epoch:.1f} s/epoch" if r.seconds_per_epoch is not None else "",
             f"left {duration(r.left)}" if r.state != "done" or r.left else ""]
    return "  ".join(c for c in cells if c)


def _state_cell(r: RunStatus) -> str:
    if r.state in ("training", "stopped"):
        return f"{r.state} {r.detail.split(';')[0]}"
    if r.state == "evaluating":
        return f"evaluating {r.detail}"
    return r.state


def text(s: GridStatus) -> str:
    """The runs grouped by dataset and variant, one line each (failed and stalled ones with why and what to do),
    then each stage's totals and the grid's ETA."""
    lines, group = [], None
    width = max((len(_state_cell(r)) for r in s.runs), default=0)
    for r in s.runs:
        if (r.dataset, r.variant) != group:
            group = r.dataset, r.variant
            lines.append(f"{r.dataset} / {r.variant}")
        lines.append(f"  seed{r.seed:<3} {_state_cell(r):<{width}}  {_numbers(r)}".rstrip())
        if r.state in ("failed", "stalled"):
            lines.append(f"        why:  {r.detail}" + (f"  ({r.job_log})" if r.job_log else ""))
            lines.append(f"        next: {r.next_step}")
    train, ev = s.stages["train"], s.stages["evaluate"]
    lines += ["", "runs: " + ", ".join(f"{n} {state}" for state, n in s.counts.items()),
              f"train:    {train['done']}/{train['jobs']} runs trained, {train['epochs_done']}/{train['epochs']} epochs, "
              f"{duration(train['left_seconds'])} of jobs left",
              f"evaluate: {ev['done']}/{ev['jobs']} jobs done, {duration(ev['left_seconds'])} of jobs left"]
    if s.eta_seconds is None:
        lines.append("grid: some jobs have no cost (no measurement or shipped rate for their model): no ETA")
    else:
        end = time.strftime("%Y-%m-%d %H:%M", time.localtime(s.read_at + s.eta_seconds))
        pace = f"at the {s.running} job(s) running now" if s.running else "nothing runs now; one job at a time"
        lines.append(f"grid: {duration(s.left)} of jobs left; {pace}: ETA {duration(s.eta_seconds)} ({end})")
    return "\n".join(lines) + "\n"
