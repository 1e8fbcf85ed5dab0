"""The one sandbox for everything that executes model output: shell commands, test runs, code.

In RL the policy writes the commands, so every one is hostile input. Each call runs inside
Linux namespaces through bubblewrap (`bwrap`, the sandbox Flatpak uses):

- only the task folder is visible and writable, mounted at `/task`; `/usr` (and the folders a
  caller names, e.g. a Python installation) read-only; no `/home`, `/root`, `/etc/passwd`;
- no network (an empty network namespace), fresh `/proc` (own PID namespace) and minimal `/dev`;
- an unprivileged uid: when pivotrl runs as root it drops to `nobody` before starting `bwrap`;
- wall-clock timeout, after which the whole process group is killed; with `--unshare-pid`
  and `--die-with-parent`, nothing started inside outlives the call;
- CPU seconds, address space, file size and process count capped (`prlimit`, inside the sandbox), output read as a
  stream and the command stopped once it passes `output_bytes`.

Where `bwrap` is missing or cannot create namespaces, `SandboxUnavailable` says how to fix it;
there is no fallback to running unconfined. Nothing here raises on what the command does: a
refusal, a timeout or a crash inside is a `Result`. See the README's "Security model".
"""

from __future__ import annotations

import atexit
import contextlib
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
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

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
    processes: int = 64                # processes of the sandbox's uid
    output_bytes: int = 64 << 10       # stdout + stderr read back; the command is stopped past it
    tmp_bytes: int = 64 << 20          # size of the sandbox's own /tmp (in memory)


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
    args = ["--unshare-all", "--die-with-parent", "--new-session", *_root_mounts(),
            "--proc", "/proc", "--dev", "/dev", "--size", str(limits.tmp_bytes), "--tmpfs", "/tmp"]
    for source, dest in read_only:
        args += ["--ro-bind", source, dest]
    # The root itself (bwrap's in-memory folder holding the mount points) read-only last.
    args += ["--bind", str(workdir), TASK_DIR, "--remount-ro", "/", "--chdir", TASK_DIR, "--clearenv"]
    return args


def run(argv: Sequence[str], workdir: str | os.PathLike, *, limits: Limits = Limits(),
        env: dict[str, str] | None = None, read_only: Sequence[str | os.PathLike] = ()) -> Result:
    """Run `argv` inside the sandbox with `workdir` as its only writable folder (cwd `/task`).

    `read_only`: host folders the command needs to see (bound at the same path). When the caller
    is root, the folder and what is in it pass to uid 65534 so that the sandbox can write there.
    Raises only SandboxUnavailable; anything the command does comes back as a `Result`.
    """
    bwrap, prlimit = _check()
    if not argv:
        return Result(None, error="empty command")
    if any("\x00" in a for a in argv) or any("\x00" in k + v for k, v in (env or {}).items()):
        return Result(None, error="NUL byte in the command")
    workdir = Path(workdir)
    if not workdir.is_dir() or workdir.is_symlink():
        return Result(None, error=f"not a folder: {workdir}")
    full_env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": TASK_DIR, "LC_ALL": "C.UTF-8", "TMPDIR": "/tmp",
                **(env or {})}
    setenv = [a for k, v in full_env.items() for a in ("--setenv", k, v)]
    mounts = [(os.path.realpath(p), os.path.realpath(p)) for p in read_only]
    staged: list[tuple[str, str]] = []
    if os.geteuid() == 0:
        give_to_nobody(workdir)
        mounts, staged = _stage_unreachable(mounts + [(str(workdir.resolve()), TASK_DIR)])
        workdir, mounts = Path(mounts[-1][0]), mounts[:-1]
    argv = [bwrap, *_bwrap_args(workdir, mounts, limits), *setenv, "--", *_prlimit(prlimit, limits), *argv]
    return _run(argv, limits, staged)


def _reachable_by_nobody(path: str) -> bool:
    for parent in Path(path).parents:
        try:
            st = parent.stat()
        except OSError:
            return False
        if not (st.st_mode & stat.S_IXOTH or (st.st_uid == NOBODY and st.st_mode & stat.S_IXUSR)):
            return False
    return True


@functools.lru_cache(maxsize=1)
def _stage_root() -> str:
    root = tempfile.mkdtemp(prefix="pivotrl-stage-")
    os.chmod(root, 0o755)
    atexit.register(shutil.rmtree, root, True)  # empty mount points; the mounts died with each call
    return root


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


def _run(argv: list[str], limits: Limits, staged: Sequence[tuple[str, str]] = ()) -> Result:
    # bwrap reports its sandbox's first process on --info-fd: its PID namespace is what must be
    # empty before the call returns (the kernel kills the rest when that process dies, not at once).
    info_r, info_w = os.pipe()
    argv = [argv[0], "--info-fd", str(info_w), *argv[1:]]
    drop: dict = {}
    if staged:  # mount what nobody cannot reach in a private mount namespace, then become nobody
        # (bwrap mounts them read-only or writable again, as asked)
        binds = " && ".join(f"mount --bind {shlex.quote(src)} {shlex.quote(dst)}" for src, dst in staged)
        argv = ["unshare", "--mount", "--propagation", "private", "--", "sh", "-c",
                f'{binds} && exec setpriv --reuid={NOBODY} --regid={NOBODY} --clear-groups -- "$@"', "sh", *argv]
    elif os.geteuid() == 0:
        drop = {"user": NOBODY, "group": NOBODY, "extra_groups": []}
    try:
        proc = subprocess.Popen(argv, env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin"}, stdin=subprocess.DEVNULL,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True,
                                pass_fds=(info_w,), **drop)
    except OSError as exc:
        os.close(info_r)
        return Result(None, error=f"could not start: {exc}")
    finally:
        os.close(info_w)
    out, err, info = bytearray(), bytearray(), bytearray()
    namespace = None
    timed_out = truncated = False
    deadline = time.monotonic() + limits.timeout_s
    with selectors.DefaultSelector() as sel:
        sel.register(proc.stdout, selectors.EVENT_READ, out)
        sel.register(proc.stderr, selectors.EVENT_READ, err)
        sel.register(info_r, selectors.EVENT_READ, info)
        while any(k.data is not info for k in sel.get_map().values()):
            left = deadline - time.monotonic()
            if left <= 0:
                timed_out = True
                break
            for key, _ in sel.select(timeout=left):
                chunk = os.read(key.fd, 65536)
                if not chunk:
                    sel.unregister(key.fileobj)
                    continue
                key.data.extend(chunk)
                if key.data is info and namespace is None:
                    namespace = _namespace_of(info)
            if len(out) + len(err) > limits.output_bytes:
                truncated = True
                break
    if timed_out or truncated:
        _kill_group(proc)
    try:
        returncode = proc.wait(timeout=max(0.0, deadline - time.monotonic()) + 1.0)
    except subprocess.TimeoutExpired:  # output closed but still running (it closed its own stdout)
        timed_out = True
        _kill_group(proc)
        returncode = proc.wait()
    proc.stdout.close()
    proc.stderr.close()
    os.close(info_r)
    if namespace is not None:
        _wait_until_empty(namespace)
    error = "timed out" if timed_out else ("output limit reached" if truncated else "")
    if timed_out or truncated:
        returncode = None
    elif returncode < 0 or returncode in (128 + signal.SIGKILL, 128 + signal.SIGXCPU):
        error = "killed (CPU, memory or process limit)"
    cut = limits.output_bytes
    return Result(returncode, bytes(out[:cut]), bytes(err[:max(0, cut - len(out))]), timed_out, truncated, error)


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
    for path in walk(root, include_root=True):
        with contextlib.suppress(OSError):
            os.chown(path, NOBODY, NOBODY, follow_symlinks=False)


def walk(root: Path, include_root: bool = False) -> Iterator[Path]:
    """Every entry under `root`, links not followed, without recursion (a model can make a
    folder thousands of levels deep; `os.walk` and `rglob` recurse in Python 3.11)."""
    if include_root:
        yield root
    stack = [root]
    while stack:
        folder = stack.pop()
        try:
            entries = list(os.scandir(folder))
        except OSError:
            continue
        for entry in entries:
            path = Path(entry.path)
            yield path
            if entry.is_dir(follow_symlinks=False):
                stack.append(path)


def snapshot(root: str | os.PathLike, max_file_bytes: int = 1 << 20) -> list[tuple]:
    """What a command left in a folder, safe to take after hostile code ran there: relative path,
    kind and content (regular files, read through an lstat-checked descriptor), link targets
    (never followed), folders. FIFOs and devices are listed, never opened."""
    root = Path(root)
    out = []
    for path in walk(root):
        rel = str(path.relative_to(root))
        try:
            st = os.lstat(path)
        except OSError:
            continue
        if stat.S_ISLNK(st.st_mode):
            out.append((rel, "link", os.readlink(path)))
        elif stat.S_ISDIR(st.st_mode):
            out.append((rel, "dir", b""))
        elif stat.S_ISREG(st.st_mode):
            out.append((rel, "file", read_regular(path, max_file_bytes)))
        else:
            out.append((rel, "special", b""))
    return sorted(out)


def read_regular(path: str | os.PathLike, max_bytes: int = 1 << 20) -> bytes | None:
    """A regular file's bytes (at most `max_bytes`); None for a link, FIFO, folder or missing file."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:
        return None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None
        return os.read(fd, max_bytes)
    finally:
        os.close(fd)


def remove_tree(path: str | os.PathLike) -> None:
    """Remove a folder that hostile code may have filled (very deep trees, read-only folders)."""
    path = Path(path)
    if not path.exists() and not path.is_symlink():
        return
    try:
        shutil.rmtree(path)
        return
    except (OSError, RecursionError):
        pass
    # coreutils walks any depth without recursion limits; make everything writable first.
    subprocess.run(["chmod", "-R", "u+rwx", "--", str(path)], capture_output=True, check=False)
    subprocess.run(["rm", "-rf", "--", str(path)], capture_output=True, check=False)


@contextlib.contextmanager
def task_folder(prefix: str = "pivotrl-task-") -> Iterator[Path]:
    """A temporary task folder, removed afterwards whatever was made inside it."""
    path = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        yield path
    finally:
        remove_tree(path)


def python_paths() -> list[str]:
    """What a sandboxed `sys.executable` needs to see: this interpreter's installation and its
    environment, read-only."""
    paths = {sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix}
    return sorted(p for p in paths if p and os.path.isdir(p) and not p.startswith("/usr"))
