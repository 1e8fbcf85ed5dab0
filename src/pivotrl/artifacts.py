"""Reading and writing the pipeline's files: JSONL with line numbers in errors, atomic writes.

Every artifact is written to a temporary file in the same folder and renamed into place, so a
crash never leaves a half-written file behind; appends write whole lines and flush.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections import Counter
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from pivotrl.errors import DataError


def iter_jsonl(path: str | os.PathLike, skipped: Counter | None = None) -> Iterator[tuple[int, Any]]:
    """Yield (line number, decoded object) for each non-blank line; bad JSON names the line.

    With a `skipped` counter, lines that are not UTF-8 or not JSON (a truncated line, binary
    garbage) are counted there by reason (`bad_utf8`, `bad_json`) and skipped instead.
    """
    path = Path(path)
    if not path.exists():
        raise DataError("file not found", file=str(path))
    if path.is_dir():
        raise DataError("is a folder; expected a JSONL file (or, where accepted, a saved dataset folder)",
                        file=str(path))
    with open(path, "rb") as fh:
        for lineno, raw in enumerate(fh, start=1):
            if not raw.strip():
                continue
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                if skipped is not None:
                    skipped["bad_utf8"] += 1
                    continue
                raise DataError(f"not valid UTF-8 ({exc.reason} at byte {exc.start})",
                                file=str(path), line=lineno) from None
            try:
                obj = json.loads(text)
            except (ValueError, RecursionError) as exc:  # ValueError: also an integer of over 4,300 digits
                if skipped is not None:
                    skipped["bad_json"] += 1
                    continue
                msg = (f"{exc.msg} (column {exc.colno})" if isinstance(exc, json.JSONDecodeError) else
                       "nested too deeply" if isinstance(exc, RecursionError) else f"{str(exc).split(';')[0]}")
                raise DataError(f"invalid JSON: {msg}", file=str(path), line=lineno) from None
            yield lineno, obj


def repair_journal(path: str | os.PathLike) -> int:
    """Cut a torn last line (a crash in the middle of an append) off an append-only JSONL
    journal, so the next append starts on a line of its own. Returns the bytes removed."""
    path = Path(path)
    if not path.is_file():
        return 0
    with open(path, "rb+") as fh:
        size = fh.seek(0, os.SEEK_END)
        if size == 0:
            return 0
        fh.seek(size - 1)
        if fh.read(1) == b"\n":
            return 0
        # Scan back for the last newline in blocks; everything after it is the torn line.
        pos, keep = size, 0
        while pos > 0:
            start = max(0, pos - 65536)
            fh.seek(start)
            block = fh.read(pos - start)
            cut = block.rfind(b"\n")
            if cut >= 0:
                keep = start + cut + 1
                break
            pos = start
        fh.truncate(keep)
        fh.flush()
        os.fsync(fh.fileno())
        return size - keep


def file_kind(path: str | os.PathLike) -> str:
    """What a pipeline file holds, from its first record: `profile` (records with a state and its
    rewards), `gym` (NeMo Gym rows), `states` (ours), else `trajectories` (OpenAI/ShareGPT/HF)."""
    path = Path(path)
    if path.suffix == ".parquet" and path.is_file():
        import pyarrow as pa
        import pyarrow.parquet as pq

        try:
            keys = set(pq.read_schema(path).names)
        except (pa.ArrowException, OSError, ValueError) as exc:
            raise unreadable_parquet(path, exc) from None
    elif path.is_dir() or not path.exists():
        return "trajectories"  # a saved Hugging Face dataset (or a path the loaders will report)
    else:
        first = next((r for _, r in iter_jsonl(path, Counter())), None)
        keys = set(first) if isinstance(first, dict) else set()
    if {"state", "rewards"} <= keys:
        return "profile"
    if "responses_create_params" in keys:
        return "gym"
    if "reference" in keys and "context" in keys:
        return "states"
    return "trajectories"


PARQUET_BATCH_ROWS = 256


def iter_parquet(path: str | os.PathLike) -> Iterator[tuple[str, dict]]:
    """("row N[, row group G]", row) for each row of a parquet file, read a batch of rows at a time
    (a few KB of parquet can hold millions of rows or a value that expands a thousandfold: no row
    group is decoded whole, and nothing is cached on disk, as `datasets.Dataset.from_parquet` would:
    ~190 MB of Arrow cache for a 2.8 KB file). A file pyarrow cannot read is one DataError."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        pf = pq.ParquetFile(path)
    except (pa.ArrowException, OSError, ValueError) as exc:
        raise unreadable_parquet(path, exc) from None
    n = 0
    for group in range(pf.num_row_groups):
        batches = pf.iter_batches(batch_size=PARQUET_BATCH_ROWS, row_groups=[group])
        while True:
            try:
                batch = next(batches, None)
            except (pa.ArrowException, OSError, ValueError) as exc:
                raise unreadable_parquet(path, exc, f" at row group {group}") from None
            if batch is None:
                break
            for row in batch.to_pylist():
                yield f"row {n}" + (f", row group {group}" if pf.num_row_groups > 1 else ""), row
                n += 1


def iter_dataset_rows(path: str | os.PathLike) -> Iterator[tuple[str, dict]]:
    """("row N", row) for each row of a Hugging Face dataset: a parquet file (streamed, `iter_parquet`)
    or a `save_to_disk` folder (its "train" split, else its first). A folder that is not a saved
    dataset, or one that cannot be loaded, is one DataError."""
    path = Path(path)
    if not path.is_dir():
        yield from iter_parquet(path)
        return
    if not (path / "dataset_info.json").exists() and not (path / "dataset_dict.json").exists():
        raise DataError("is a folder but not a saved Hugging Face dataset; expected a JSONL file", file=str(path))
    import datasets

    try:
        ds = datasets.load_from_disk(str(path))
        if isinstance(ds, datasets.DatasetDict):
            ds = ds["train"] if "train" in ds else next(iter(ds.values()))
    except (FileNotFoundError, ValueError, OSError) as exc:
        raise DataError(f"cannot read as a Hugging Face dataset: {exc}", file=str(path)) from None
    for i, row in enumerate(ds):
        yield f"row {i}", row


def unreadable_parquet(path: str | os.PathLike, exc: Exception, where: str = "") -> DataError:
    """The one-line error for a `.parquet` file that pyarrow cannot read (truncated, not parquet)."""
    first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    return DataError(f"cannot be read as parquet{where} ({first})", file=str(path))


def _umask() -> int:
    mask = os.umask(0o022)  # the only way to read it is to set it; set it straight back
    os.umask(mask)
    return mask


@contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "w"):
    """Open a temporary sibling of `path`; rename it over `path` only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, 0o666 & ~_umask())  # mkstemp makes 0600: give the file the mode open() would
        with os.fdopen(fd, mode, encoding=None if "b" in mode else "utf-8") as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def gzip_copy(path: str | os.PathLike, packed: str | os.PathLike) -> None:
    """A gzipped copy of `path` at `packed`, written atomically (no timestamp: the same file gives the
    same bytes, so a committed copy changes only when its content does)."""
    import gzip

    with atomic_open(packed, "wb") as fh:
        fh.write(gzip.compress(Path(path).read_bytes(), mtime=0))


def gunzip_copy(packed: str | os.PathLike, path: str | os.PathLike) -> None:
    """`packed` (a `gzip_copy`) unpacked to `path`, atomically."""
    import gzip

    with atomic_open(path, "wb") as fh:
        fh.write(gzip.decompress(Path(packed).read_bytes()))


def weights_sha256(model_dir: str | os.PathLike) -> str | None:
    """The sha256 of a saved model's weight files (`model*.safetensors`, `pytorch_model*.bin`, by
    name): which model a result came from, so that a model trained again can be told apart from the
    one a stored result used. None where there are none (a hub id, a folder without weights)."""
    import hashlib

    folder = Path(model_dir)
    files = sorted([*folder.glob("model*.safetensors"), *folder.glob("pytorch_model*.bin")]) if folder.is_dir() else []
    if not files:
        return None
    digest = hashlib.sha256()
    for f in files:
        digest.update(f"{f.name}\0{f.stat().st_size}\0".encode())
        with open(f, "rb") as fh:
            while chunk := fh.read(1 << 20):
                digest.update(chunk)
    return digest.hexdigest()


def write_jsonl(path: str | os.PathLike, records: Iterable[Any]) -> int:
    """Write records as JSONL atomically; returns the number written."""
    n = 0
    with atomic_open(path) as fh:
        for rec in records:
            fh.write(json.dumps(rec, ensure_ascii=False) + "\n")
            n += 1
    return n


def append_jsonl(path: str | os.PathLike, records: Iterable[Any]) -> None:
    """Append whole lines and flush them, so a resumed job sees only complete records. A line torn
    by an earlier crash is cut off first, so it never swallows the first new record."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    repair_journal(path)
    with open(path, "a", encoding="utf-8") as fh:
        for rec in records:
            fh.write(json.dumps(rec, ensure_ascii=False) + "\n")
        fh.flush()
        os.fsync(fh.fileno())
