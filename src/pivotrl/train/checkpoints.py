"""Which checkpoint a resumed run starts from: the newest *complete* one.

A kill during a save (preemption, a time limit, an OOM) is ordinary on a cluster, and saving a real
model's weights and optimizer takes minutes. It leaves the newest `checkpoint-N` without some of
its files or with one cut short; transformers' `get_last_checkpoint` takes the newest folder by
name all the same, and the resume fails on it (a bare path, a safetensors header error) or, without
`trainer_state.json`, counts its steps from 0 again and trains past `max_steps`.

So each checkpoint is checked for every file the Trainer writes (`Trainer._save_checkpoint`:
weights, then optimizer and scheduler, then the RNG states, `trainer_state.json` last) and the ones
pivotrl's callbacks add, each read far enough to tell whether it was cut short: a safetensors file
must be as long as its header says, a `torch.save` file must have its zip directory (written last),
a JSON file must parse. Newer torn checkpoints are moved aside to `torn-checkpoints/`, never
deleted, and the run says which and why.

Why not write checkpoints atomically (a temporary folder renamed into place)? transformers names
the folder inside `_save_checkpoint`, rotates old ones there, and under DeepSpeed and FSDP every
rank writes its shards into it; staging would mean copying that method and adding a barrier before
the rename, that is, fighting the library on every upgrade. Checking on resume costs a few reads.

DeepSpeed's and FSDP's sharded checkpoints are checked only as far as their layout shows completion
(DeepSpeed's `latest` tag naming a non-empty folder; FSDP's `.metadata`, which
torch.distributed.checkpoint writes after the shards). Those paths are untested here (no GPU).
"""

from __future__ import annotations

import json
import re
import shutil
import struct
import zipfile
from pathlib import Path

from pivotrl.errors import DataError

TORN_FOLDER = "torn-checkpoints"
_CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")  # transformers' PREFIX_CHECKPOINT_DIR pattern


def checkpoints(out: Path) -> list[Path]:
    """`out`'s checkpoint folders, newest (highest step) first."""
    if not out.is_dir():
        return []
    found = [p for p in out.iterdir() if _CHECKPOINT.match(p.name) and p.is_dir()]
    return sorted(found, key=lambda p: int(_CHECKPOINT.match(p.name).group(1)), reverse=True)


def _safetensors_problem(path: Path) -> str | None:
    """Why a safetensors file is not whole, or None: its 8-byte header length, JSON header, and
    data offsets must all fit the file's size exactly (what safetensors itself checks on load)."""
    size = path.stat().st_size
    with open(path, "rb") as fh:
        head = fh.read(8)
        if len(head) < 8:
            return "shorter than a safetensors header"
        (n,) = struct.unpack("<Q", head)
        if n > size - 8:
            return "cut short (its header runs past the end)"
        try:
            header = json.loads(fh.read(n))
        except ValueError:
            return "its header is not JSON"
    ends = [v["data_offsets"][1] for k, v in header.items() if k != "__metadata__" and isinstance(v, dict)]
    if 8 + n + max(ends, default=0) != size:
        return f"cut short ({size:,} bytes of {8 + n + max(ends, default=0):,})"
    return None


def _torch_file_problem(path: Path) -> str | None:
    """A `torch.save` file is a zip whose central directory comes last: a file cut short has none."""
    try:
        with zipfile.ZipFile(path) as z:
            z.namelist()
    except (zipfile.BadZipFile, OSError, ValueError) as exc:
        return f"cut short or unreadable ({exc})"
    return None


_TORN = object()  # what `_read_json` gives for a file cut short or not JSON


def _read_json(path: Path):
    try:
        return json.loads(path.read_text())
    except (ValueError, OSError, UnicodeDecodeError):
        return _TORN


def _weights_problem(ckpt: Path) -> str | None:
    for index_name in ("model.safetensors.index.json", "adapter_model.safetensors.index.json"):
        index = ckpt / index_name
        if index.exists():
            content = _read_json(index)
            if not isinstance(content, dict):
                return f"{index_name}: cut short or not JSON"
            shards = sorted(set(content.get("weight_map", {}).values()))
            for shard in shards:
                if not (ckpt / shard).exists():
                    return f"{shard}: missing (named by {index_name})"
                problem = _safetensors_problem(ckpt / shard)
                if problem:
                    return f"{shard}: {problem}"
            return None
    for name in ("model.safetensors", "adapter_model.safetensors"):
        if (ckpt / name).exists():
            problem = _safetensors_problem(ckpt / name)
            return f"{name}: {problem}" if problem else None
    for name in ("pytorch_model.bin", "adapter_model.bin"):
        if (ckpt / name).exists():
            problem = _torch_file_problem(ckpt / name)
            return f"{name}: {problem}" if problem else None
    fsdp = sorted(ckpt.glob("pytorch_model_fsdp_*"))
    if fsdp:
        return None if all((d / ".metadata").exists() for d in fsdp) else "FSDP weights without .metadata"
    if _deepspeed_folder(ckpt):
        return None  # DeepSpeed keeps the weights in its own folder (checked below)
    return "no model weights (model.safetensors, an index of shards, or an adapter)"


def _deepspeed_folder(ckpt: Path) -> Path | None:
    latest = ckpt / "latest"
    return ckpt / latest.read_text().strip() if latest.is_file() else None


def checkpoint_problem(ckpt: Path, extra_files: tuple[str, ...] = ()) -> str | None:
    """Why `ckpt` cannot be resumed from, or None when every file a resume reads is there and whole.
    `extra_files`: JSON files pivotrl's own callbacks write into each checkpoint (after the Trainer's)."""
    if not any(ckpt.iterdir()):
        return "empty"
    problem = _weights_problem(ckpt)
    if problem:
        return problem
    ds = _deepspeed_folder(ckpt)
    if ds is not None:
        if not ds.is_dir() or not any(ds.iterdir()):
            return f"DeepSpeed's 'latest' names {ds.name}, which is missing or empty"
    elif sorted(ckpt.glob("optimizer_*")):  # FSDP's sharded optimizer
        if not all((d / ".metadata").exists() for d in ckpt.glob("optimizer_*") if d.is_dir()):
            return "FSDP optimizer without .metadata"
    else:
        for name in ("optimizer.pt", "scheduler.pt"):
            if not (ckpt / name).exists():
                return f"{name}: missing"
            problem = _torch_file_problem(ckpt / name)
            if problem:
                return f"{name}: {problem}"
    rng = sorted(ckpt.glob("rng_state*.pth"))
    if not rng:
        return "rng_state.pth: missing"
    for path in rng:
        problem = _torch_file_problem(path)
        if problem:
            return f"{path.name}: {problem}"
    for name in ("trainer_state.json", *extra_files):  # trainer_state.json is the Trainer's last file
        if not (ckpt / name).exists():
            return f"{name}: missing"
        value = _read_json(ckpt / name)
        if value is _TORN:
            return f"{name}: cut short or not JSON"
        if name == "trainer_state.json":
            state = value
    step = state.get("global_step") if isinstance(state, dict) else None
    if step != int(_CHECKPOINT.match(ckpt.name).group(1)):
        return f"trainer_state.json: global_step {step} does not match the folder's name"
    return None


def resume_checkpoint(out: Path, extra_files: tuple[str, ...] = (), *, move_aside: bool = True,
                      log=lambda msg: print(msg, flush=True)) -> str | None:
    """The newest complete checkpoint in `out` (None when `out` holds none at all). Newer torn ones
    are named with their reason and, with `move_aside` (the main process), moved to
    `out/torn-checkpoints/`. Checkpoints that are all torn are a DataError saying how to start over."""
    found = checkpoints(Path(out))
    torn = []
    for ckpt in found:
        try:
            problem = checkpoint_problem(ckpt, extra_files)
        except OSError as exc:  # another rank's main process moved it aside while this one looked
            problem = f"unreadable ({exc.strerror or exc})"
        if problem is None:
            break
        torn.append((ckpt, problem))
    else:
        if found:
            reasons = "; ".join(f"{c.name}: {why}" for c, why in torn[:4])
            raise DataError(f"no complete checkpoint to resume from ({reasons}): start over with --overwrite true "
                            "(it removes them), or give another output_dir", file=str(out))
        return None
    for bad, problem in torn if move_aside else ():
        aside, n = Path(out) / TORN_FOLDER / bad.name, 1
        while aside.exists():
            aside, n = Path(out) / TORN_FOLDER / f"{bad.name}.{n}", n + 1
        aside.parent.mkdir(exist_ok=True)
        shutil.move(str(bad), str(aside))
        log(f"resume: skipped {bad.name} ({problem}); moved it to {aside}")
    return str(ckpt)
