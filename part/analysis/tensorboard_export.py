"""A grid's training logs as TensorBoard event files (``part tensorboard``), beside the running grid.

The training loop writes ``log.jsonl`` and nothing else; this turns every run's log into one TensorBoard run,
``OUT/<dataset>/<variant>/seed<k>``: each number of an epoch's record (losses, accuracies, learning rate,
share of pixels at full ε, epoch and refresh seconds, validation) as a scalar at step = epoch, and the
dataset's ε-map gallery figure as an image on the run it shows. It is incremental: a small state file per
run (``part_tensorboard.json``, written atomically after the events are on disk) says how many epochs and
which gallery were exported; a rerun appends only the rest, in a new event file that TensorBoard reads
beside the earlier ones.

Written with tensorboard's own ``EventFileWriter`` and summary protos rather than
``torch.utils.tensorboard.SummaryWriter``: no torch import (seconds on a login node, beside a live grid),
images included (``tensorboard.summary.Writer`` has scalars only), and the optional ``tensorboard`` extra is
the one dependency.
"""

from __future__ import annotations

import struct
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from part.base import files
from part.base.grid import Grid, Run
from part.base.rundir import read_log_so_far

STATE_FILE = "part_tensorboard.json"
EXTRA = "pip install -e '.[tensorboard]' (or pip install 'tensorboard>=2.16')"
PNG_COLOURS = {0: 1, 2: 3, 4: 2, 6: 4}
"""A PNG's colour type (IHDR) to the channels TensorBoard's image summary names (grey, RGB, grey+α, RGBA)."""


def _tensorboard() -> tuple[Any, Any, Any]:
    """tensorboard's writer and protos; a ValueError naming the extra where it is not installed."""
    try:
        from tensorboard.compat.proto import event_pb2, summary_pb2
        from tensorboard.summary.writer.event_file_writer import EventFileWriter
    except ImportError as err:
        raise ValueError(f"part tensorboard needs the optional 'tensorboard' extra ({err}): {EXTRA}") from None
    return EventFileWriter, event_pb2, summary_pb2


def scalars(record: dict[str, Any]) -> dict[str, float]:
    """The numbers of an epoch's record, by their key (a flag such as ``refreshed`` as 0 / 1); the step
    (``epoch``) and the words (``phase``) are not scalars."""
    return {key: float(value) for key, value in record.items()
            if key != "epoch" and isinstance(value, (int, float))}


def png_size(data: bytes, source: Path) -> tuple[int, int, int]:
    """(height, width, channels) from a PNG's header."""
    if data[:8] != b"\x89PNG\r\n\x1a\n" or data[12:16] != b"IHDR":
        raise ValueError(f"{source}: not a PNG file")
    width, height = struct.unpack(">II", data[16:24])
    return height, width, PNG_COLOURS.get(data[25], 4)


@dataclass(frozen=True)
class Exported:
    """What one run's export added: its directory, the epochs and whether an image was written."""
    out: Path
    epochs: int
    image: bool


def run_out(out: Path, run: Run) -> Path:
    return out / run.dataset / run.variant / f"seed{run.seed}"


def gallery_png(g: Grid, run: Run) -> Path | None:
    """The ε-map gallery figure of ``run``'s dataset where the figure shows this run and has been drawn."""
    shown = g.gallery_run(run.dataset)
    path = g.results_dir / "figures" / f"gallery_{run.dataset}.png"
    return path if shown is not None and shown.path == run.path and path.is_file() else None


def export_run(g: Grid, run: Run, out: Path) -> Exported:
    """Append ``run``'s epochs (and gallery) not yet exported to its TensorBoard directory."""
    target = run_out(out, run)
    state_path = target / STATE_FILE
    state = files.read_json_object(state_path, f"delete {target} to export the run again") \
        if state_path.is_file() else {"epochs": 0, "gallery": None}
    records = read_log_so_far(g.run_dir(run))[state["epochs"]:]
    png = gallery_png(g, run)
    stamp = None if png is None else f"{png.stat().st_mtime_ns}:{png.stat().st_size}"
    image = stamp is not None and stamp != state["gallery"]
    if not records and not image:
        return Exported(target, 0, False)
    writer_class, event_pb2, summary_pb2 = _tensorboard()
    target.mkdir(parents=True, exist_ok=True)
    writer = writer_class(str(target))
    now = time.time()
    for record in records:
        values = [summary_pb2.Summary.Value(tag=tag, simple_value=value) for tag, value in scalars(record).items()]
        writer.add_event(event_pb2.Event(wall_time=now, step=record["epoch"], summary=summary_pb2.Summary(value=values)))
    if image:
        data = png.read_bytes()
        height, width, channels = png_size(data, png)
        picture = summary_pb2.Summary.Image(height=height, width=width, colorspace=channels, encoded_image_string=data)
        step = state["epochs"] + len(records)
        writer.add_event(event_pb2.Event(wall_time=now, step=step, summary=summary_pb2.Summary(
            value=[summary_pb2.Summary.Value(tag="gallery/eps_maps", image=picture)])))
    writer.close()  # the events are on disk before the state says they are
    files.write_json(state_path, {"epochs": state["epochs"] + len(records), "gallery": stamp or state["gallery"]})
    return Exported(target, len(records), image)


def export(g: Grid, out: str | Path) -> list[Exported]:
    """Every run of the grid that has a log (main table, then experiments); refuses before reading any
    where tensorboard is not installed."""
    _tensorboard()
    return [export_run(g, run, Path(out)) for run in g.runs.values()]
