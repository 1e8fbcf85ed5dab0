"""The one sandbox for everything that executes model output: shell commands, test runs, code.

In RL the policy writes the commands, so every one is hostile input. Each call runs inside
Linux namespaces through bubblewrap (`bwrap`, the sandbox Flatpak uses):

- only the task folder is visible and writable, mounted at `/task`; `/usr` (and the folders a
  caller names, e.g. a Python installation) read-only; no `/home`, `/root`, `/etc/passwd`;
- no network (a network namespace of its own, with only a loopback interface), fresh `/proc` (own PID
  namespace) and minimal `/dev`;
- an unprivileged uid: when pivotrl runs as root it drops to `nobody` before starting `bwrap`;
- wall-clock timeout, after which the whole process group is killed; with `--unshare-pid`
  and `--die-with-parent`, nothing started inside outlives the call;
- CPU seconds, address space, file size and process count capped per process (`prlimit`, inside
  the sandbox); memory (its `/tmp` and a size-capped `/dev/shm` included) and processes capped for
  the whole call by a cgroup of its own where the caller may make one (root, as here); the task
  folder's size, file count and depth watched while the command runs (a walk by descriptor, `scan`),
  and a folder already past them gets no call; output read as a stream; the command stopped once it
  passes any of these;
- the task folder is checked before it is handed over: no device node, and no hard link to a file
  outside it (a root caller gives the folder to `nobody`, which would give such a file away too);
- whatever way the caller leaves a call (an exception, Ctrl-C, an alarm), the sandbox is killed
  first; task folders live in one folder per process, removed at exit, and a folder left by a
  process that was killed is removed by the next one.

Where `bwrap` is missing or cannot create namespaces, `SandboxUnavailable` says how to fix it;
there is no fallback to running unconfined. Nothing here raises on what the command does: a
refusal, a timeout or a crash inside is a `Result`. See docs/guides/security.md.
"""

from __future__ import annotations

import atexit
import contextlib
import errno
import functools
import json
import os
import selectors
import shlex
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

from pivotrl.errors import DataError

TASK_DIR = "/task"       # where the task folder appears inside the sandbox
NOBODY = 65534           # the uid and gid a root caller drops to
INSTALL_HINT = ("install bubblewrap: `apt-get install bubblewrap` (Debian/Ubuntu), `dnf install bubblewrap` "
                "(Fedora) or `pacman -S bubblewrap`; it also needs unprivileged user namespaces "
                "(sysctl kernel.unprivileged_userns_clone=1 where that setting exists)")


class SandboxUnavailable(DataError):
    """bwrap is missing or cannot run here: model output is never executed without it."""


@dataclass(frozen=True)
class Limits:
    timeout_s: float = 5.0             # wall clock, sandbox start included
    cpu_s: int = 5                     # CPU seconds per process
    memory_bytes: int = 1 << 30        # address space per process
    file_bytes: int = 1 << 20          # largest file a process may write
    processes: int = 64                # processes of the sandbox's uid (and of the call's cgroup)
    output_bytes: int = 64 << 10       # stdout + stderr read back; the command is stopped past it
    tmp_bytes: int = 64 << 20          # size of the sandbox's own /tmp (in memory)
    shm_bytes: int = 16 << 20          # size of its /dev/shm (the rest of /dev is read-only)
    call_memory_bytes: int = 1 << 30   # memory of the whole call, /tmp and /dev/shm included (cgroup)
    disk_bytes: int = 256 << 20        # the task folder's size on disk, watched while the command runs
    disk_files: int = 20_000           # entries in the task folder, likewise
    disk_depth: int = 128              # folders nested deeper count as over the disk limits (the walk's bound)
    command_bytes: int = 1 << 20       # the command line itself


POLL_S = 0.25  # how often a running call's task folder is measured against its disk limits


@dataclass
class Result:
    returncode: int | None             # None: killed (timeout, output cap) or never started
    stdout: bytes = b""
    stderr: bytes = b""
    timed_out: bool = False
    truncated: bool = False            # output passed the cap and the command was stopped
    error: str = ""                    # why it did not run or did not finish, for the agent to read

    @property
    def ok(self) -> bool:
        return self.returncode == 0

    def text(self) -> str:
        return (self.stdout + self.stderr).decode("utf-8", errors="replace")


def _root_mounts() -> list[str]:
    """`/usr` read-only, and `/bin`, `/lib*`, `/sbin` as the host has them (links on merged-/usr systems)."""
    args = ["--ro-bind", "/usr", "/usr"]
    for name in ("/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32"):
        if os.path.islink(name):
            args += ["--symlink", os.readlink(name), name]
        elif os.path.isdir(name):
            args += ["--ro-bind", name, name]
    # What dynamic linking and Debian's alternatives need; nothing with users or secrets.
    for name in ("/etc/ld.so.cache", "/etc/ld.so.conf", "/etc/ld.so.conf.d", "/etc/alternatives"):
        args += ["--ro-bind-try", name, name]
    return args


@functools.lru_cache(maxsize=1)
def _check() -> tuple[str, str]:
    """(bwrap path, prlimit path), after one real sandboxed `true`; SandboxUnavailable otherwise."""
    bwrap, prlimit = shutil.which("bwrap"), shutil.which("prlimit")
    if not bwrap:
        raise SandboxUnavailable(f"model-written commands run only inside a sandbox, and `bwrap` was not found: "
                                 f"{INSTALL_HINT}")
    if not prlimit:
        raise SandboxUnavailable("`prlimit` (util-linux) was not found: install util-linux")
    with task_folder() as tmp:
        if os.geteuid() == 0:
            give_to_nobody(tmp)
        res = _run([bwrap, *_bwrap_args(tmp, (), Limits()), "--", *_prlimit(prlimit, Limits()), "true"], Limits(timeout_s=20))
    if not res.ok:
        raise SandboxUnavailable(f"`bwrap` is installed but could not start a sandbox "
                                 f"({res.error or res.stderr.decode(errors='replace').strip()}); {INSTALL_HINT}")
    return bwrap, prlimit


def require_sandbox() -> None:
    """Raise SandboxUnavailable now (at set-up) rather than on the first model command."""
    _check()


def sandbox_available() -> bool:
    try:
        _check()
        return True
    except SandboxUnavailable:
        return False


def _bwrap_args(workdir: Path, read_only: Sequence[tuple[str, str]], limits: Limits) -> list[str]:
    # /dev is a tmpfs of half the RAM: made read-only once a size-capped /dev/shm is on it. The
    # command is the namespace's PID 1 (`--as-pid-1`): bwrap's own process, whose command line names
    # host paths, is not in it to be read from /proc. /proc/loadavg is the host's (not namespaced):
    # a constant file stands in for it.
    args = ["--unshare-all", "--die-with-parent", "--new-session", "--as-pid-1", *_root_mounts(),
            "--proc", "/proc", "--ro-bind", _constant_loadavg(), "/proc/loadavg",
            "--dev", "/dev", "--size", str(limits.shm_bytes), "--tmpfs", "/dev/shm", "--remount-ro", "/dev",
            "--size", str(limits.tmp_bytes), "--tmpfs", "/tmp"]
    for source, dest in read_only:
        args += ["--ro-bind", source, dest]
    # The root itself (bwrap's in-memory folder holding the mount points) read-only last.
    args += ["--bind", str(workdir), TASK_DIR, "--remount-ro", "/", "--chdir", TASK_DIR, "--clearenv"]
    return args


def _constant_loadavg() -> str:
    path = session_dir() / "loadavg"  # this process's folder: nothing else writes there
    if not path.is_file():
        tmp = path.with_name(f"loadavg.{os.getpid()}.{threading.get_ident()}")
        tmp.write_text("0.00 0.00 0.00 1/1 1\n")
        tmp.chmod(0o644)  # read by `nobody` when the caller is root
        os.replace(tmp, path)  # whole, for a call on another thread
    return str(path)


def run(argv: Sequence[str], workdir: str | os.PathLike, *, limits: Limits = Limits(),
        env: dict[str, str] | None = None, read_only: Sequence[str | os.PathLike] = (),
        stdin: bytes | None = None) -> Result:
    """Run `argv` inside the sandbox with `workdir` as its only writable folder (cwd `/task`).

    `read_only`: host folders the command needs to see (bound at the same path). When the caller
    is root, the folder and what is in it pass to uid 65534 so that the sandbox can write there.
    `stdin`: bytes the command reads (at most a pipe's buffer, 64 KiB), else nothing.
    Raises only SandboxUnavailable; anything the command does comes back as a `Result`.
    """
    bwrap, prlimit = _check()
    if not argv:
        return Result(None, error="empty command")
    words = [*argv, *(f"{k}={v}" for k, v in (env or {}).items())]
    if any("\x00" in w for w in words):
        return Result(None, error="NUL byte in the command")
    try:
        size = sum(len(os.fsencode(w)) for w in words)
    except UnicodeEncodeError:
        return Result(None, error="the command is not valid text (an unpaired surrogate)")
    if size > limits.command_bytes:
        return Result(None, error=f"command too long ({size} bytes; at most {limits.command_bytes})")
    workdir = Path(workdir)
    if not workdir.is_dir() or workdir.is_symlink():
        return Result(None, error=f"not a folder: {workdir}")
    refused = handover_problem(workdir, limits)
    if refused:
        return Result(None, error=refused)
    full_env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": TASK_DIR, "LC_ALL": "C.UTF-8", "TMPDIR": "/tmp",
                **(env or {})}
    setenv = [a for k, v in full_env.items() for a in ("--setenv", k, v)]
    mounts = [(os.path.realpath(p), os.path.realpath(p)) for p in read_only]
    staged: list[tuple[str, str]] = []
    task = workdir
    if os.geteuid() == 0:
        give_to_nobody(workdir)
        mounts, staged = _stage_unreachable(mounts + [(str(workdir.resolve()), TASK_DIR)])
        workdir, mounts = Path(mounts[-1][0]), mounts[:-1]
    argv = [bwrap, *_bwrap_args(workdir, mounts, limits), *setenv, "--", *_prlimit(prlimit, limits), *argv]
    return _run(argv, limits, staged, task, stdin)


def handover_problem(root: Path, limits: Limits) -> str | None:
    """Why a folder may not be handed to the sandbox for a call, or None, in one walk: a device node,
    a hard link to a file outside it (its other name is a host file: the sandbox would write it, and
    a root caller's hand-over to `nobody` would give it away), folders nested past `disk_depth`, or a
    folder already past its disk caps (each call could otherwise add what one poll interval lets
    through). A refusal is named before the disk caps."""
    inside: Counter = Counter()
    links: dict[tuple[int, int], tuple[int, str]] = {}
    used = files = 0
    for entry in scan(root, limits.disk_depth):
        st = entry.st
        if st is None:
            return f"refused: folders nested deeper than {limits.disk_depth} levels ({entry.rel})"
        if stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode):
            return f"refused: a device node in the task folder ({entry.rel})"
        if stat.S_ISREG(st.st_mode) and st.st_nlink > 1:
            key = (st.st_dev, st.st_ino)
            inside[key] += 1
            links[key] = (st.st_nlink, entry.rel)
        files += 1
        used += st.st_blocks * 512
    for key, seen in inside.items():
        total, rel = links[key]
        if total > seen:
            return f"refused: a hard link to a file outside the task folder ({rel})"
    if used > limits.disk_bytes or files > limits.disk_files:
        return "disk limit reached"
    return None


def _reachable_by_nobody(path: str) -> bool:
    for parent in Path(path).parents:
        try:
            st = parent.stat()
        except OSError:
            return False
        if not (st.st_mode & stat.S_IXOTH or (st.st_uid == NOBODY and st.st_mode & stat.S_IXUSR)):
            return False
    return True


def _stage_root() -> str:
    """Empty mount points, in this process's session folder (the mounts die with each call)."""
    root = session_dir() / "stage"
    root.mkdir(mode=0o755, exist_ok=True)
    return str(root)


def _stage_unreachable(mounts: list[tuple[str, str]]) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """A root caller drops to `nobody` before starting bwrap, and `nobody` may not be able to walk
    to a folder the sandbox needs (a Python installed under /root). Such a folder is bind-mounted,
    in a private mount namespace of that one call, on an empty folder `nobody` can reach."""
    out, staged = [], []
    for i, (source, dest) in enumerate(mounts):
        if _reachable_by_nobody(source):
            out.append((source, dest))
            continue
        stage = os.path.join(_stage_root(), str(i))
        os.makedirs(stage, exist_ok=True)
        staged.append((source, stage))
        out.append((stage, dest))
    return out, staged


def _prlimit(prlimit: str, limits: Limits) -> list[str]:
    """Limits applied inside the sandbox, so the process count is the sandbox's own (in its user
    namespace) and not every process of the uid, bwrap's not-yet-reaped monitors included."""
    return [prlimit, f"--cpu={limits.cpu_s}", f"--as={limits.memory_bytes}", f"--fsize={limits.file_bytes}",
            f"--nproc={limits.processes}", "--core=0", "--"]


def run_shell(command: str, workdir: str | os.PathLike, *, limits: Limits = Limits(),
              shell: str = "/bin/sh") -> Result:
    """`sh -c command` inside the sandbox."""
    return run([shell, "-c", command], workdir, limits=limits)


def _run(argv: list[str], limits: Limits, staged: Sequence[tuple[str, str]] = (), task: Path | None = None,
         stdin: bytes | None = None) -> Result:
    # bwrap reports its sandbox's first process on --info-fd: its PID namespace is what must be
    # empty before the call returns (the kernel kills the rest when that process dies, not at once).
    info_r, info_w = os.pipe()
    argv = [argv[0], "--info-fd", str(info_w), *argv[1:]]
    group = CallCgroup.make(limits) if os.geteuid() == 0 else None
    drop: dict = {}
    if staged or group:  # as root: mount what nobody cannot reach in a private mount namespace, enter the
        # call's cgroup, then become nobody (bwrap mounts them read-only or writable again, as asked)
        steps = [f"mount --bind {shlex.quote(src)} {shlex.quote(dst)}" for src, dst in staged]
        steps += [f"echo $$ > {shlex.quote(str(f))}" for f in (group.procs_files if group else [])]
        script = " && ".join(steps + [f'exec setpriv --reuid={NOBODY} --regid={NOBODY} --clear-groups -- "$@"'])
        argv = ["sh", "-c", script, "sh", *argv]
        if staged:
            argv = ["unshare", "--mount", "--propagation", "private", "--", *argv]
    elif os.geteuid() == 0:
        drop = {"user": NOBODY, "group": NOBODY, "extra_groups": []}
    try:  # cwd "/": the caller's working directory must not reach bwrap's environment (PWD)
        proc = subprocess.Popen(argv, env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin"},
                                stdin=subprocess.DEVNULL if stdin is None else subprocess.PIPE,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True,
                                pass_fds=(info_w,), cwd="/", **drop)
    except OSError as exc:
        os.close(info_r)
        if group:
            group.remove()
        return Result(None, error=f"could not start: {exc}")
    finally:
        os.close(info_w)
    namespace = None
    deadline = time.monotonic() + limits.timeout_s
    try:
        if stdin is not None:
            with contextlib.suppress(OSError):  # a command that exits at once closes the pipe first
                proc.stdin.write(stdin[:65536])
            with contextlib.suppress(OSError):
                proc.stdin.close()
        out, err, namespace, why = _watch(proc, info_r, limits, task, deadline)
        if why:
            _kill_group(proc)
        try:
            returncode = proc.wait(timeout=max(0.0, deadline - time.monotonic()) + 1.0)
        except subprocess.TimeoutExpired:  # output closed but still running (it closed its own stdout)
            why = why or "timed out"
            _kill_group(proc)
            returncode = proc.wait()
    finally:  # whatever the caller is interrupted by (Ctrl-C, an alarm): the sandbox goes first
        if proc.poll() is None:
            _kill_group(proc)
            proc.wait()
        proc.stdout.close()
        proc.stderr.close()
        os.close(info_r)
        if namespace is not None:
            _wait_until_empty(namespace)
        if group:
            group.remove()
    if why:
        returncode = None
    elif returncode < 0 or returncode in (128 + signal.SIGKILL, 128 + signal.SIGXCPU):
        why = "killed (CPU, memory or process limit)"
    cut = limits.output_bytes
    return Result(returncode, bytes(out[:cut]), bytes(err[:max(0, cut - len(out))]), why == "timed out",
                  why == "output limit reached", why)


def _watch(proc: subprocess.Popen, info_r: int, limits: Limits, task: Path | None, deadline: float):
    """Read the call's output until it closes or a limit is passed: (stdout, stderr, the sandbox's
    PID namespace, why it was stopped or "")."""
    out, err, info = bytearray(), bytearray(), bytearray()
    namespace = None
    next_poll = time.monotonic() + POLL_S
    with selectors.DefaultSelector() as sel:
        sel.register(proc.stdout, selectors.EVENT_READ, out)
        sel.register(proc.stderr, selectors.EVENT_READ, err)
        sel.register(info_r, selectors.EVENT_READ, info)
        while any(k.data is not info for k in sel.get_map().values()):
            left = deadline - time.monotonic()
            if left <= 0:
                return out, err, namespace, "timed out"
            for key, _ in sel.select(timeout=min(left, POLL_S)):
                chunk = os.read(key.fd, 65536)
                if not chunk:
                    sel.unregister(key.fileobj)
                    continue
                key.data.extend(chunk)
                if key.data is info and namespace is None:
                    namespace = _namespace_of(info)
            if len(out) + len(err) > limits.output_bytes:
                return out, err, namespace, "output limit reached"
            if task is not None and time.monotonic() >= next_poll:
                next_poll = time.monotonic() + POLL_S
                if over_disk_limit(task, limits):
                    return out, err, namespace, "disk limit reached"
    if task is not None and over_disk_limit(task, limits):
        return out, err, namespace, "disk limit reached"
    return out, err, namespace, ""


def over_disk_limit(root: Path, limits: Limits) -> bool:
    """Whether the task folder holds more than `disk_bytes` (blocks actually used: a sparse file
    counts what it takes), more than `disk_files` entries, or folders nested deeper than
    `disk_depth`; stops counting once past any. It walks by descriptor (`scan`), so no path length
    hides a folder, and a folder swapped for a link while it walks is never entered."""
    used = files = 0
    for entry in scan(root, limits.disk_depth):
        files += 1
        if entry.st is None:
            return True
        used += entry.st.st_blocks * 512
        if used > limits.disk_bytes or files > limits.disk_files:
            return True
    return False


class CallCgroup:
    """One cgroup per call (memory, processes), for a root caller where the cgroup hierarchies are
    writable: v1 `memory` and `pids` controllers, or v2 with both. Every process of the call is in
    it, so its memory (tmpfs included) and process count are capped together, not one process at a
    time."""

    _counter = 0

    def __init__(self, dirs: list[Path]):
        self.dirs = dirs
        self.procs_files = [d / "cgroup.procs" for d in dirs]

    @classmethod
    def make(cls, limits: Limits) -> CallCgroup | None:
        layout = _cgroup_layout()
        if layout is None:
            return None
        cls._counter += 1
        name = f"pivotrl-{os.getpid()}-{cls._counter}"
        made: list[Path] = []
        try:
            if "unified" in layout:
                d = layout["unified"] / name
                d.mkdir()
                made.append(d)
                _write(d / "memory.max", limits.call_memory_bytes)
                _write(d / "memory.swap.max", 0, optional=True)
                _write(d / "pids.max", limits.processes)
            else:
                mem, pids = layout["memory"] / name, layout["pids"] / name
                mem.mkdir()
                made.append(mem)
                pids.mkdir()
                made.append(pids)
                _write(mem / "memory.limit_in_bytes", limits.call_memory_bytes)
                _write(mem / "memory.swappiness", 0, optional=True)  # where swap is not accounted: none
                _write(mem / "memory.memsw.limit_in_bytes", limits.call_memory_bytes, optional=True)
                _write(pids / "pids.max", limits.processes)
        except OSError:
            cls(made).remove()
            return None
        return cls(made)

    def remove(self) -> None:
        """Kill what is left in it (nothing, normally: the namespace is empty by now) and remove it."""
        for d in self.dirs:
            for _ in range(50):
                try:
                    pids = [int(x) for x in (d / "cgroup.procs").read_text().split()]
                except OSError:
                    pids = []
                for pid in pids:
                    with contextlib.suppress(OSError):
                        os.kill(pid, signal.SIGKILL)
                try:
                    d.rmdir()
                    break
                except FileNotFoundError:
                    break
                except OSError:
                    time.sleep(0.02)


def _write(path: Path, value: int, optional: bool = False) -> None:
    try:
        path.write_text(str(value))
    except OSError:
        if not optional:
            raise


@functools.lru_cache(maxsize=1)
def cgroup_mode() -> str:
    """How a call's memory and processes are capped here: 'cgroup v1', 'cgroup v2', or
    'per process' (no cgroup this process may make: a caller that is not root, a read-only hierarchy)."""
    layout = _cgroup_layout()
    return "per process" if layout is None else ("cgroup v2" if "unified" in layout else "cgroup v1")


@functools.lru_cache(maxsize=1)
def _cgroup_layout() -> dict[str, Path] | None:
    if os.geteuid() != 0:
        return None
    own = _own_cgroups()
    candidates: dict[str, list[Path]] = {}
    for controller in ("memory", "pids"):
        base = Path("/sys/fs/cgroup") / controller
        candidates[controller] = [base / own.get(controller, "").lstrip("/"), base]
    for base in (Path("/sys/fs/cgroup"), Path("/sys/fs/cgroup/unified")):
        try:
            controllers = (base / "cgroup.controllers").read_text().split()
        except OSError:
            continue
        if {"memory", "pids"} <= set(controllers) and _can_make(base):
            return {"unified": base}
    layout = {}
    for controller, paths in candidates.items():
        found = next((p for p in paths if (p / "cgroup.procs").exists() and _can_make(p)), None)
        if found is None:
            return None
        layout[controller] = found
    return layout


def _own_cgroups() -> dict[str, str]:
    out = {}
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/cgroup").read_text().splitlines():
            _, controllers, path = line.split(":", 2)
            for c in controllers.split(","):
                out[c] = path
    return out


def _can_make(base: Path) -> bool:
    probe = base / f"pivotrl-probe-{os.getpid()}"
    try:
        probe.mkdir()
    except OSError:
        return False
    with contextlib.suppress(OSError):
        probe.rmdir()
    return True


def _namespace_of(info: bytearray) -> str | None:
    """The PID namespace of the sandbox's first process, from bwrap's `--info-fd` JSON."""
    try:
        pid = json.loads(bytes(info))["child-pid"]
        return os.readlink(f"/proc/{pid}/ns/pid")
    except (ValueError, KeyError, TypeError, OSError):
        return None


def _wait_until_empty(namespace: str, timeout: float = 10.0) -> None:
    """Return once no live process is left in the sandbox's PID namespace (the kernel kills them all
    when its first process dies, but a fork bomb takes a moment to tear down)."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        alive = False
        for entry in os.scandir("/proc"):
            if not entry.name.isdigit():
                continue
            try:
                if os.readlink(f"/proc/{entry.name}/ns/pid") != namespace:
                    continue
                with open(f"/proc/{entry.name}/stat", "rb") as fh:
                    alive = fh.read().rsplit(b")", 1)[1].split()[0] != b"Z"
            except OSError:
                continue
            if alive:
                break
        if not alive:
            return
        time.sleep(0.01)


def _kill_group(proc: subprocess.Popen) -> None:
    """Kill bwrap's process group; its PID namespace dies with it, and every process inside."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)


def give_to_nobody(root: Path) -> None:
    """Make the task folder the sandbox uid's. lchown only: a link made inside must never
    hand its target on the host to that uid."""
    with contextlib.suppress(OSError):
        os.chown(root, NOBODY, NOBODY, follow_symlinks=False)
    for entry in scan(root):
        if entry.st is not None:
            with contextlib.suppress(OSError):
                os.chown(entry.name, NOBODY, NOBODY, dir_fd=entry.dir_fd, follow_symlinks=False)


class Entry(NamedTuple):
    rel: str                        # the path under the walked folder
    st: os.stat_result | None       # its lstat; None: a folder at the depth bound, not entered
    dir_fd: int                     # its folder's descriptor, open until the walk moves on
    name: str                       # its name in that folder


def scan(root: str | os.PathLike, max_depth: int = Limits.disk_depth) -> Iterator[Entry]:
    """Every entry under `root`, walked by descriptor: each folder opened relative to its parent's
    descriptor with O_NOFOLLOW (a folder swapped for a link meanwhile is not entered; no path is
    ever resolved, so no length hides an entry), depth-first without recursion. A folder at depth
    `max_depth` comes with `st=None` and is not entered (the walk holds one descriptor a level).
    Callers act on an entry through `dir_fd` and `name`, never through a path. Not `os.fwalk`: it
    recurses in Python 3.11 and has no depth bound."""
    flags = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        top = os.open(root, flags)
    except OSError:
        return
    stack = [(top, "", iter(_listing(top)))]
    try:
        while stack:
            fd, prefix, names = stack[-1]
            name = next(names, None)
            if name is None:
                os.close(stack.pop()[0])
                continue
            rel = prefix + name
            try:
                st = os.stat(name, dir_fd=fd, follow_symlinks=False)
            except OSError:
                continue
            if not stat.S_ISDIR(st.st_mode):
                yield Entry(rel, st, fd, name)
                continue
            if len(stack) >= max_depth:
                yield Entry(rel, None, fd, name)
                continue
            yield Entry(rel, st, fd, name)
            try:
                child = os.open(name, flags, dir_fd=fd)
            except OSError:  # gone, or swapped for a link or a file since its lstat
                continue
            stack.append((child, rel + "/", iter(_listing(child))))
    finally:
        for fd, _, _ in stack:
            os.close(fd)


def _listing(fd: int) -> list[str]:
    try:
        with os.scandir(fd) as it:  # scandir reads a duplicate of `fd`, closed with the iterator
            return sorted(e.name for e in it)
    except OSError:
        return []


def snapshot(root: str | os.PathLike, max_file_bytes: int = 1 << 20, max_total_bytes: int = 16 << 20,
             max_entries: int = 20_000) -> list[tuple]:
    """What a command left in a folder, safe to take after hostile code ran there: relative path,
    kind and content (regular files, read through an lstat-checked descriptor), link targets
    (never followed), folders. FIFOs and devices are listed, never opened. The caller's memory is
    bounded: past `max_total_bytes` of content a file is kept as its SHA-256 (equal files still
    compare equal), and past `max_entries` entries, or where folders nest past `Limits.disk_depth`, the
    listing holds a `("...", "truncated", b"")` entry."""
    import hashlib

    out: list[tuple] = []
    kept = 0
    for entry in scan(root):
        st, rel = entry.st, entry.rel
        if len(out) >= max_entries:
            out.append(("...", "truncated", b""))
            break
        if st is None:  # a folder past the depth bound: its content is not listed, and the listing says so
            if ("...", "truncated", b"") not in out:
                out.append(("...", "truncated", b""))
            continue
        if stat.S_ISLNK(st.st_mode):
            with contextlib.suppress(OSError):
                out.append((rel, "link", os.readlink(entry.name, dir_fd=entry.dir_fd)))
        elif stat.S_ISDIR(st.st_mode):
            out.append((rel, "dir", b""))
        elif stat.S_ISREG(st.st_mode):
            data = read_regular(entry.name, max_file_bytes, dir_fd=entry.dir_fd)
            if data is not None and kept + len(data) > max_total_bytes:
                data = b"sha256:" + hashlib.sha256(data).hexdigest().encode()
            kept += len(data or b"")
            out.append((rel, "file", data))
        else:
            out.append((rel, "special", b""))
    return sorted(out)


def read_regular(path: str | os.PathLike, max_bytes: int = 1 << 20, dir_fd: int | None = None) -> bytes | None:
    """A regular file's bytes (at most `max_bytes`); None for a link, FIFO, folder or missing file.
    `dir_fd`: `path` is a name in that folder (as `scan` gives it)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=dir_fd)
    except OSError:
        return None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None
        return os.read(fd, max_bytes)
    finally:
        os.close(fd)


def remove_tree(path: str | os.PathLike) -> None:
    """Remove what is at `path`, which hostile code may have made: a link or any other non-folder is
    unlinked, never followed (as root, following a link the sandbox made would act on a host file);
    a folder is emptied by descriptor (`_empty_folder`), whatever its depth or permissions."""
    path = Path(path)
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if not stat.S_ISDIR(st.st_mode):
        path.unlink()
        return
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:  # swapped for a link or a file since its lstat: that is unlinked, nothing more
        path.unlink()
        return
    try:
        _empty_folder(fd)
    finally:
        os.close(fd)
    path.rmdir()


def _empty_folder(top: int) -> None:
    """Remove everything in the folder open as `top`, by descriptor, never following a link, with
    at most two descriptors open: each sub-folder's own sub-folders are moved up into `top` (a
    rename within the folder), then its files unlinked and the emptied folder removed, until `top`
    is empty. A folder made read-only inside is made writable first, through its descriptor (never
    through a path, which a link could redirect). Not `shutil.rmtree`: it recurses, one descriptor
    a level, and fails on a folder thousands of levels deep or without write permission."""
    moved = 0
    flags = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
    _own_folder(top)
    while True:
        names = _listing(top)
        if not names:
            return
        progress = False
        for name in names:
            try:
                st = os.stat(name, dir_fd=top, follow_symlinks=False)
            except FileNotFoundError:
                continue
            if not stat.S_ISDIR(st.st_mode):
                os.unlink(name, dir_fd=top)
                progress = True
                continue
            try:
                sub = os.open(name, os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=top)
                _own_folder(sub)
                os.close(sub)
                sub = os.open(name, flags, dir_fd=top)
            except OSError:
                continue
            try:
                for inner in _listing(sub):
                    if not stat.S_ISDIR(os.stat(inner, dir_fd=sub, follow_symlinks=False).st_mode):
                        os.unlink(inner, dir_fd=sub)
                        continue
                    while True:  # lifted into `top` under a fresh name: no folder is entered deeper than one level
                        moved += 1
                        try:
                            os.rename(inner, f".pivotrl-rm-{moved}", src_dir_fd=sub, dst_dir_fd=top)
                            break
                        except OSError as exc:  # the name is taken: the next one
                            if exc.errno not in (errno.EEXIST, errno.ENOTEMPTY, errno.ENOTDIR, errno.EISDIR):
                                raise
            finally:
                os.close(sub)
            os.rmdir(name, dir_fd=top)
            progress = True
        if not progress:
            raise OSError(errno.ENOTEMPTY, "could not empty the folder")


def _own_folder(fd: int) -> None:
    """rwx for its owner on the folder open as `fd` (an O_PATH descriptor has no fchmod; its
    /proc/self/fd link names the folder itself, never a path a link could redirect)."""
    with contextlib.suppress(OSError):
        os.chmod(f"/proc/self/fd/{fd}", stat.S_IMODE(os.fstat(fd).st_mode) | stat.S_IRWXU)


def clear_path(root: Path, rel: str) -> Path:
    """`root / rel` made ready for the host to write a file there: each folder on the way must be a
    real folder inside `root` (a link, a file or anything else there, made by code that ran, is
    removed, never followed), and what stands at the end, if not a regular file, is removed too.
    The path is checked as data first (`task_path`'s rules)."""
    _check_relative(rel)
    path = Path(root)
    parts = Path(rel).parts
    for i, part in enumerate(parts):
        path = path / part
        try:
            st = os.lstat(path)  # every folder before it was checked to be a real one
        except FileNotFoundError:
            break
        last = i == len(parts) - 1
        if (stat.S_ISREG(st.st_mode) and st.st_nlink == 1) if last else stat.S_ISDIR(st.st_mode):
            continue
        remove_tree(path)
        break
    return Path(root, rel)


SESSION_PREFIX = "pivotrl-sandbox-"
_session: tuple[int, Path] | None = None


def session_dir() -> Path:
    """This process's folder for task folders and mount stages (`/tmp/pivotrl-sandbox-PID-START-...`),
    removed at interpreter exit. Folders left by a process that no longer runs (killed with SIGKILL,
    say) are removed when the next one starts."""
    global _session
    if _session is None or _session[0] != os.getpid():  # a forked child gets a folder of its own
        _sweep_stale_sessions()
        path = Path(tempfile.mkdtemp(prefix=f"{SESSION_PREFIX}{os.getpid()}-{_start_time(os.getpid())}-"))
        os.chmod(path, 0o711)  # nobody may pass through to its own task folders, not list them
        atexit.register(_remove_session, os.getpid(), path)
        _session = (os.getpid(), path)
    return _session[1]


def _remove_session(pid: int, path: Path) -> None:
    if os.getpid() == pid:
        remove_tree(path)


def _start_time(pid: int) -> str | None:
    """A process's start time (clock ticks since boot): with the pid, it names one process for good."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def _sweep_stale_sessions() -> None:
    for entry in Path(tempfile.gettempdir()).glob(SESSION_PREFIX + "*"):
        try:
            pid, start = entry.name[len(SESSION_PREFIX):].split("-")[:2]
            mine = entry.lstat().st_uid == os.geteuid()
        except (ValueError, OSError):
            continue
        if mine and pid.isdigit() and _start_time(int(pid)) != start:
            remove_tree(entry)


def new_task_folder(prefix: str = "pivotrl-task-") -> Path:
    """A fresh task folder in this process's session folder (the caller removes it, or exit does)."""
    return Path(tempfile.mkdtemp(prefix=prefix, dir=session_dir()))


@contextlib.contextmanager
def task_folder(prefix: str = "pivotrl-task-") -> Iterator[Path]:
    """A temporary task folder, removed afterwards whatever was made inside it."""
    path = new_task_folder(prefix)
    try:
        yield path
    finally:
        remove_tree(path)


def _check_relative(rel) -> None:
    """A path that data chose: relative, inside the folder (no `..`), no NUL; DataError otherwise."""
    if not isinstance(rel, str) or not rel or "\x00" in rel or os.path.isabs(rel) or ".." in Path(rel).parts:
        raise DataError(f"file path {rel!r} must be relative and stay inside the task folder")


def task_path(root: Path, rel: str) -> Path:
    """`root / rel` for a relative path that data chose: DataError unless it stays inside `root`
    (no absolute path, no `..`, no NUL, no link on the way)."""
    _check_relative(rel)
    path = root
    for part in Path(rel).parts:
        path = path / part
        if path.is_symlink():
            raise DataError(f"file path {rel!r} goes through a link")
    return path


def write_files(root: Path, files: dict) -> None:
    """Create a task's files (`{relative path: text}`, from data) inside `root`, never outside it."""
    if not isinstance(files, dict):
        raise DataError("a task's files must be an object {path: text}")
    for rel, text in files.items():
        path = task_path(root, rel)
        if not isinstance(text, str):
            raise DataError(f"the content of {rel!r} must be text")
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o644)
        with os.fdopen(fd, "w", encoding="utf-8", errors="surrogateescape") as fh:
            fh.write(text)


def copy_into(source: str | os.PathLike, dest: Path, limits: Limits = Limits()) -> None:
    """Copy a folder into a task folder by content: regular files become files of their own (a
    hard link is copied, never shared), folders and links are made anew (links never followed);
    device nodes, FIFOs and sockets are refused, and so is a folder over the disk limits. Never
    `shutil.copytree`: it opens FIFOs (and waits on them) and follows nothing it should not."""
    source = Path(source)
    files = size = 0
    for entry in scan(source):
        st, rel = entry.st, entry.rel
        files += 1
        if st is None:
            raise DataError(f"{source}: folders nested deeper than {Limits.disk_depth} levels ({rel})")
        target = dest / rel
        if stat.S_ISDIR(st.st_mode):
            target.mkdir(exist_ok=True)
        elif stat.S_ISLNK(st.st_mode):
            os.symlink(os.readlink(entry.name, dir_fd=entry.dir_fd), target)
        elif stat.S_ISREG(st.st_mode):
            data = read_regular(entry.name, limits.disk_bytes + 1, dir_fd=entry.dir_fd)
            size += len(data or b"")
            if data is None or size > limits.disk_bytes:
                raise DataError(f"{source}: more than {limits.disk_bytes} bytes, or a file that changed while copied")
            fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
        else:
            raise DataError(f"{source}: {rel} is a device, FIFO or socket; the sandbox takes only files and folders")
        if files > limits.disk_files:
            raise DataError(f"{source}: more than {limits.disk_files} entries")


def python_paths() -> list[str]:
    """What a sandboxed `sys.executable` needs to see: this interpreter's installation and its
    environment, read-only."""
    paths = {sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix}
    return sorted(p for p in paths if p and os.path.isdir(p) and not p.startswith("/usr"))
