"""Everything that executes model output runs in the sandbox: escape and abuse attempts through the
lab terminal, the lab code domain and the `shell` verifier. For each attempt: nothing outside the
task folder is written, the host's secret is not read into anything the model sees, no process
outlives the call, and the call returns instead of raising."""

import os
import random
import subprocess
import time
from pathlib import Path

import pytest

from pivotrl import Action, ToolCall, get_verifier, sandbox
from pivotrl.lab.audit import reward_hacks
from pivotrl.lab.domains.code import CodeEnv, _sample as code_task
from pivotrl.lab.domains.terminal import TerminalEnv
from pivotrl.lab.restricted_shell import ALLOWED, RestrictedShell

SECRET = "s3cr3t-" + "%08x" % random.Random(os.getpid()).getrandbits(32)
ENV_SECRET = "PIVOTRL_TEST_ENV_SECRET"


@pytest.fixture(scope="module", autouse=True)
def need_sandbox():
    if not sandbox.sandbox_available():
        if os.environ.get("CI"):
            pytest.fail("bubblewrap is required in CI (make installs it)")
        pytest.skip("bubblewrap is not available here")
    os.environ[ENV_SECRET] = SECRET
    yield
    os.environ.pop(ENV_SECRET, None)


@pytest.fixture
def host(tmp_path):
    """A folder beside the task folder, holding a secret; what it looks like before the attack."""
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_text(SECRET + "\n")
    return outside


def _our_pidns():
    return os.readlink("/proc/self/ns/pid")


def survivors() -> list[str]:
    """Live processes in another PID namespace than ours: only the sandbox makes those (so these
    tests run alone on a machine: another process's sandboxes would count too)."""
    ours, found = _our_pidns(), []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            if os.readlink(f"/proc/{entry}/ns/pid") == ours:
                continue
            state = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if state != "Z":
            found.append(entry)
    return found


def assert_contained(outside: Path, before: list, seen: str, task_dir: Path | None = None, *, marker="pwned"):
    time.sleep(0.05)  # the kernel tears the namespace down just after bwrap exits
    assert not survivors(), "a sandboxed process outlived the call"
    assert sandbox.snapshot(outside) == before, "something outside the task folder changed"
    assert not Path("/tmp", marker).exists() and not Path.cwd().joinpath(marker).exists()
    assert SECRET not in seen, "the host's secret reached the model"
    if task_dir is not None and task_dir.exists():
        for rel, kind, data in sandbox.snapshot(task_dir):
            assert kind != "file" or SECRET.encode() not in data, f"secret copied into {rel}"


# --- the lab terminal --------------------------------------------------------------------------------
def terminal_attacks(outside: Path) -> list[str]:
    secret, out = str(outside / "secret.txt"), str(outside / "pwned")
    known = [  # the escapes found by review, through options the first layer did not check
        "sort -S 4K -T. --compress-program=sh s2",
        "sort --files0-from=list", f"cp -t{outside} data/a.txt", f"cp --target-directory={outside} data/a.txt",
        f"mv -t{outside} data/a.txt", f"cp -l -t{outside} data/a.txt", f"sort -o{out} data/a.txt",
        f"sort --out={out} data/a.txt", f"sort --output={out} data/a.txt",
    ]
    attached = []  # option-attached paths for every allowed program
    for prog in sorted(ALLOWED):
        attached += [f"{prog} -f{secret}", f"{prog} --file={secret}", f"{prog} -o{out}", f"{prog} --output={out}",
                     f"{prog} --reference={secret} data/a.txt"]
    other = [
        f"cat {secret}", f"cp {secret} leaked.txt", "cat data/../../outside/secret.txt", "cat ~/.bashrc",
        "cat /proc/1/environ", "cat /proc/self/environ", "ls /proc", f"echo {SECRET} > /tmp/pwned", "echo $HOME",
        f"echo x > {out}", f"grep -r {SECRET[:4]} /", "cp -s data/a.txt link.txt", "cp -rs data linked",
        "ls -la", "cat link_out", "cat link_dir/outside/secret.txt", "cp link_out leaked.txt",
        "echo x > dir", "mkdir -p " + "d/" * 2000, "echo a\x00b", "cat " + " ".join(["missing"] * 3000) + " | wc -l",
        "cat big big big big big big big big", "sort -S 4K -T. big big | wc -l", "tr a b < data/a.txt",
        "echo x >> " + out, "cut -f1 --output-delimiter=x " + secret, "head -c 100 /dev/urandom",
        "grep -f " + secret + " data/a.txt", "wc --files0-from=" + secret, "touch -r " + secret + " data/a.txt",
    ]
    return known + attached + other


@pytest.mark.parametrize("first_layer", [True, False], ids=["parser+sandbox", "sandbox-alone"])
def test_lab_terminal_contains_every_attack(tmp_path, host, monkeypatch, first_layer):
    if not first_layer:  # the parser's path checks off: the sandbox must hold on its own
        monkeypatch.setattr(RestrictedShell, "check_argument", lambda self, arg: None)
        monkeypatch.setattr(RestrictedShell, "inside", lambda self, arg: Path(arg))
    env = TerminalEnv()
    env.reset(files={"data/a.txt": "temp=3\nrain=7\n", "big": "y\n" * 200_000,
                     "s2": f"cp /etc/passwd leaked.txt; cat {host}/secret.txt > leaked2.txt; id > /tmp/pwned\n" * 400})
    os.symlink(host / "secret.txt", env.dir / "link_out")
    os.symlink(host.parent, env.dir / "link_dir")
    (env.dir / "dir").mkdir()
    (env.dir / "list").write_bytes(str(host / "secret.txt").encode() + b"\0")
    before = sandbox.snapshot(host)
    attacks = terminal_attacks(host)
    assert len(attacks) >= 80
    for command in attacks:
        out = env.run(command)
        assert isinstance(out, str), command
        assert_contained(host, before, out, env.dir)
        assert not (host / "pwned").exists(), command
    env._cleanup()
    assert not env.dir.exists()  # the 2,000-deep folder went too


def test_lab_terminal_still_does_its_job(tmp_path):
    env = TerminalEnv()
    env.reset(files={"data/oslo.txt": "temp=3\nrain=7\n"}, kind="create", target="done.txt", content="alpha")
    assert env.run("grep rain data/oslo.txt") == "rain=7"
    assert env.run("ls data | wc -l") == "1"
    assert env.run("pwd") == sandbox.TASK_DIR
    assert env.run("echo alpha > done.txt") == "(no output)"
    assert env.get_reward() == 1.0
    assert "Is a directory" in env.run("echo x > data") or "cannot create" in env.run("echo x > data")


def test_terminal_reward_ignores_a_link_to_the_answer(tmp_path, host):
    (host / "answer").write_text("alpha\n")
    env = TerminalEnv()
    env.reset(files={}, kind="create", target="done.txt", content="alpha")
    os.symlink(host / "answer", env.dir / "done.txt")
    assert env.get_reward() == 0.0


# --- the lab code domain: pytest runs model-edited code -------------------------------------------------
def code_attacks(outside: Path) -> list[str]:
    secret, out = str(outside / "secret.txt"), str(outside / "pwned")
    return [
        f"open({out!r}, 'w').write('x')",
        "open('/tmp/pwned', 'w').write('x')",
        f"open('leaked.txt', 'w').write(open({secret!r}).read())",
        "import os; open('leaked.txt', 'w').write(os.environ.get(%r, ''))" % ENV_SECRET,
        "open('leaked.txt', 'w').write(open('/proc/1/environ').read())",
        "open('leaked.txt', 'wb').write(open('/proc/%d/environ' % __import__('os').getppid(), 'rb').read())",
        f"import os; os.symlink({secret!r}, 'calc_link.py')",
        f"import os; os.link({secret!r}, 'hard.txt')",
        f"import os; os.system('cp {secret} leaked.txt; echo x > {out}')",
        "import os, signal; os.kill(-1, signal.SIGKILL)",
        "import os; os.kill(%d, 9)" % os.getpid(),
        "import subprocess; subprocess.Popen(['sleep', '60'], start_new_session=True)",
        "import os\nif os.fork() == 0:\n    os.setsid()\n    import time; time.sleep(60)",
        "import os\nfor _ in range(200):\n    try:\n        os.fork()\n    except OSError:\n        break",
        "x = bytearray(8 << 30)",
        "while True: pass",
        "import socket; socket.create_connection(('1.1.1.1', 80), timeout=2)",
        "import os; os.makedirs('d/' * 1500)",
        "print('y' * 10_000_000)",
        "import sys; sys.setrecursionlimit(10**6)\ndef f(): f()\nf()",
        "open('/task/../work/pwned', 'w')",
        "import ctypes; ctypes.CDLL(None).mount(b'none', b'/task', b'tmpfs', 0, None)",
    ]


def test_lab_code_contains_every_attack(host, monkeypatch):
    from pivotrl.lab.domains import code as code_domain

    monkeypatch.setattr(code_domain, "TEST_LIMITS", sandbox.Limits(timeout_s=4, cpu_s=3, memory_bytes=2 << 30))
    task = code_task(random.Random(0))
    before = sandbox.snapshot(host)
    for attack in code_attacks(host):
        env = CodeEnv()
        env.reset(files=task["files"])
        first = task["files"]["calc.py"].split("\n")[0]
        env.edit("calc.py", first, attack + "\n" + first)
        out = env.run_tests()
        seen = out + "".join(env.view(p.name) for p in env.dir.iterdir() if p.is_file() and not p.is_symlink())
        assert isinstance(out, str)
        assert_contained(host, before, seen, env.dir)
        for link in ("calc_link.py", "hard.txt"):  # links made inside never lead the host outside
            try:
                assert SECRET not in env.view(link)
            except ValueError:
                pass  # refused: outside the task folder
        env._cleanup()


# --- the library's shell verifier with execute=True -----------------------------------------------
def shell_attacks(outside: Path) -> list[str]:
    secret, out = str(outside / "secret.txt"), str(outside / "pwned")
    return [
        f"echo x > {out}", f"cat {secret}", f"cp {secret} leaked.txt", f"ln -s {secret} link; cat link",
        f"ln {secret} hard", "python3 -c \"open('/tmp/pwned','w')\"", f"python3 -c \"print(open('{secret}').read())\"",
        f"echo ${ENV_SECRET}", "env", "cat /proc/1/environ", "nohup sleep 60 >/dev/null 2>&1 &", "setsid sleep 60 &",
        "kill -9 -1", "f(){ f | f & }; f", "dd if=/dev/zero of=big bs=1M count=100", "yes", "yes >&2",
        "mkdir -p $(printf 'd/%.0s' $(seq 2000))", "cd / && ls -la", "mount -t tmpfs none /task",
        "unshare -r id", "mknod fifo p; cat fifo", "mkfifo fifo2", "chmod 000 .", "touch /usr/pwned",
        f"cd .. && ls && cat {secret}", "sleep 30",
    ]


def test_shell_verifier_contains_every_attack(tmp_path, host):
    work = tmp_path / "work"
    work.mkdir()
    (work / "notes.txt").write_text("hello\n")
    verifier = get_verifier("shell", execute=True, workdir=str(work), timeout=2.0)
    state = type("S", (), {"reference": Action.message("cat notes.txt"), "tools": [], "meta": {}, "context": []})()
    before, work_before = sandbox.snapshot(host), sandbox.snapshot(work)
    for command in shell_attacks(host):
        outputs = verifier._run(command, str(work))
        score = verifier.score(command, state)
        assert 0.0 <= score.reward <= 1.0
        assert_contained(host, before, repr(outputs))
        assert sandbox.snapshot(work) == work_before  # ran on a throwaway copy
    assert len(terminal_attacks(host)) + len(code_attacks(host)) + len(shell_attacks(host)) >= 80


# --- the sandbox itself ---------------------------------------------------------------------------
def test_limits_and_results(tmp_path):
    with sandbox.task_folder() as d:
        fast = sandbox.Limits(timeout_s=1.5, cpu_s=1)
        r = sandbox.run_shell("sleep 10", d, limits=fast)
        assert r.timed_out and r.returncode is None and not survivors()
        r = sandbox.run_shell("yes", d, limits=sandbox.Limits(output_bytes=1000))
        assert r.truncated and len(r.stdout) + len(r.stderr) <= 1000
        r = sandbox.run_shell("head -c 3000000 /dev/zero > f; wc -c < f", d)
        assert r.stdout.strip() == str(1 << 20).encode()  # file size capped at 1 MiB
        r = sandbox.run_shell("id -u; pwd; cat /etc/passwd", d)
        lines = r.stdout.decode().split()
        assert lines[1] == sandbox.TASK_DIR and (lines[0] == str(sandbox.NOBODY) or os.geteuid() != 0)
        assert r.returncode != 0  # no /etc/passwd in there
        assert sandbox.run(["echo", "a\x00b"], d).error == "NUL byte in the command"
        r = sandbox.run_shell("head -c 100000000 /dev/zero > /tmp/x; ls -la /tmp", d)
        assert "File size limit" in r.text() or r.returncode != 0


def test_missing_bwrap_is_a_clear_error(monkeypatch):
    sandbox._check.cache_clear()
    monkeypatch.setattr(sandbox.shutil, "which", lambda name: None)
    try:
        with pytest.raises(sandbox.SandboxUnavailable, match="apt-get install bubblewrap"):
            sandbox.require_sandbox()
        with pytest.raises(sandbox.SandboxUnavailable):
            get_verifier("shell", execute=True)
        with pytest.raises(sandbox.SandboxUnavailable):
            TerminalEnv().reset(files={})
        from pivotrl.rewards import safe_score  # a missing sandbox is a set-up error, never a reward of 0

        v = get_verifier("lab_terminal", execute=False)
        v.execute = True
        state = type("S", (), {"reference": Action.tool_calls([ToolCall("run", {"command": "ls"})]), "tools": [],
                               "meta": {"task": {"files": {"a": "b"}, "domain": "terminal",
                                                 "prompt": [{"role": "user", "content": "x"}]}}, "context": []})()
        with pytest.raises(sandbox.SandboxUnavailable):
            safe_score(v, '<tool_call>{"name": "run", "arguments": {"command": "ls -1"}}</tool_call>', state)
    finally:
        monkeypatch.undo()
        sandbox._check.cache_clear()
    assert sandbox.sandbox_available()


def test_remove_tree_and_snapshot_survive_hostile_folders(tmp_path):
    root = tmp_path / "t"
    root.mkdir()
    subprocess.run(["mkdir", "-p", "d/" * 1500], cwd=root, check=True)  # os.makedirs itself recurses
    os.mkfifo(root / "fifo")
    os.symlink("/etc/passwd", root / "link")
    snap = sandbox.snapshot(root)
    assert ("link", "link", "/etc/passwd") in snap and ("fifo", "special", b"") in snap
    depth = sandbox.Limits.disk_depth  # listed to the depth bound, then marked as cut
    assert len(snap) == depth - 1 + 3 and ("...", "truncated", b"") in snap
    (root / "ro").mkdir()
    (root / "ro" / "f").write_text("x")
    os.chmod(root / "ro", 0o500)
    sandbox.remove_tree(root)
    assert not root.exists()


def test_nothing_left_after_timeout_kill():
    with sandbox.task_folder() as d:
        r = sandbox.run_shell("(sleep 60 &) ; setsid sleep 60 & sleep 60", d, limits=sandbox.Limits(timeout_s=1))
        assert r.timed_out
    time.sleep(0.1)
    assert not survivors()


# --- what the data and the caller hand over, interrupted calls, budgets per call, crashes, hacks -------
def test_a_hard_link_or_a_device_in_the_task_folder_is_refused(tmp_path, host):
    private = host / "root_only.txt"
    private.write_text("do not touch\n")
    os.chmod(private, 0o600)
    owner = private.stat().st_uid
    with sandbox.task_folder() as d:
        os.link(private, d / "hard.txt")
        r = sandbox.run_shell("cat hard.txt; echo changed > hard.txt", d)
        assert r.returncode is None and "hard link to a file outside" in r.error and SECRET not in r.text()
        assert private.read_text() == "do not touch\n" and private.stat().st_uid == owner  # not given to nobody
        (d / "hard.txt").unlink()
        (d / "a.txt").write_text("x")
        os.link(d / "a.txt", d / "b.txt")  # both names inside: that is the task's own business
        assert sandbox.run_shell("cat b.txt", d).stdout == b"x"
        if os.geteuid() == 0:
            os.mknod(d / "null", 0o600 | __import__("stat").S_IFCHR, os.makedev(1, 3))
            assert "device node" in sandbox.run_shell("ls", d).error


def test_a_task_file_path_from_data_stays_in_the_folder(tmp_path, host):
    with sandbox.task_folder() as d:
        for bad in ("../pwned", "/tmp/pwned", "a/../../pwned", "", "x\x00y"):
            with pytest.raises(sandbox.DataError):
                sandbox.write_files(d, {bad: "x"})
        os.symlink(host, d / "out")
        with pytest.raises(sandbox.DataError, match="link"):
            sandbox.write_files(d, {"out/pwned": "x"})
    assert not (host / "pwned").exists() and not Path("/tmp/pwned").exists()
    env = TerminalEnv()
    env.reset(files={"a.txt": "x"}, kind="create", target="../../../../" + str(host / "secret.txt"),
              content=SECRET)
    assert env.get_reward() == 0.0  # a target outside the folder is no file of the task's
    env._cleanup()


def test_a_states_workdir_is_data_and_stays_under_the_callers_root(tmp_path):
    from pivotrl.rewards import check_states

    allowed = tmp_path / "tasks"
    (allowed / "t1").mkdir(parents=True)
    (allowed / "t1" / "notes.txt").write_text("hello\n")

    def state(workdir):
        return type("S", (), {"reference": Action.message("cat notes.txt"), "tools": [], "context": [], "id": "s1",
                              "meta": {"workdir": workdir}})()

    strict = get_verifier("shell", execute=True, timeout=2.0)
    etc = state("/etc")
    with pytest.raises(sandbox.DataError, match="workdir_root"):
        check_states(strict, [etc], "states.jsonl")
    assert strict.score("grep -qF 'root:' passwd", etc).reason == "workdir_refused"  # nothing ran
    rooted = get_verifier("shell", execute=True, timeout=2.0, workdir_root=str(allowed))
    check_states(rooted, [state(str(allowed / "t1"))])
    with pytest.raises(sandbox.DataError):
        check_states(rooted, [state(str(allowed / ".." / ".."))])
    assert rooted.score("cat ./notes.txt", state(str(allowed / "t1"))).reason == "same_effect"


def test_an_interrupted_call_leaves_no_sandbox_running():
    import signal

    class Alarm(Exception):
        pass

    def ring(signum, frame):
        raise Alarm

    old = signal.signal(signal.SIGALRM, ring)
    try:
        with sandbox.task_folder() as d:
            signal.alarm(1)
            with pytest.raises(Alarm):
                sandbox.run_shell("sleep 207", d, limits=sandbox.Limits(timeout_s=30))
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)
    time.sleep(0.3)
    assert not survivors()


def test_a_killed_callers_folders_are_removed_by_the_next_process(tmp_path):
    import sys

    code = ("from pivotrl import sandbox; import os, signal; d = sandbox.new_task_folder(); "
            "print(d, flush=True); os.kill(os.getpid(), signal.SIGKILL)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    left = Path(r.stdout.strip())
    assert r.returncode == -9 and left.is_dir()  # SIGKILL: no atexit ran
    subprocess.run([sys.executable, "-c", "from pivotrl import sandbox; sandbox.session_dir()"], check=True,
                   timeout=60)
    assert not left.exists() and not left.parent.exists()


def test_memory_shm_and_disk_are_capped_per_call():
    with sandbox.task_folder() as d:
        r = sandbox.run_shell("for i in $(seq 40); do head -c 1000000 /dev/zero > /dev/shm/x$i; done; "
                              "touch /dev/pwned", d)  # 1 MB a file (the file-size cap), 40 MB in all
        assert b"No space left" in r.stderr and b"Read-only" in r.stderr  # /dev/shm capped, /dev read-only
        r = sandbox.run_shell("for i in $(seq 64); do head -c 1000000 /dev/zero > f$i; done; echo done", d,
                              limits=sandbox.Limits(disk_bytes=8 << 20, timeout_s=20))
        assert r.error == "disk limit reached" and r.returncode is None  # checked every 0.25 s and at the end
        sandbox.remove_tree(d)
        d.mkdir()
        r = sandbox.run_shell("i=0; while [ $i -lt 5000 ]; do : > f$i; i=$((i+1)); done; echo done", d,
                              limits=sandbox.Limits(disk_files=1000, timeout_s=20))
        assert r.error == "disk limit reached"
        if sandbox.cgroup_mode() != "per process":  # several processes, each within its own cap
            grab = "python3 -c 'import os, time; x = os.urandom(60 << 20); time.sleep(2); print(\"alive\")'"
            r = sandbox.run_shell(f"{grab} & {grab} & {grab} & wait; echo survived", d,
                                  limits=sandbox.Limits(call_memory_bytes=128 << 20, timeout_s=20))
            assert r.stdout.count(b"alive") < 3  # 3 x 60 MB do not fit in the call's 128 MB
            r = sandbox.run_shell(f"{grab} & {grab} & {grab} & wait", d,
                                  limits=sandbox.Limits(call_memory_bytes=512 << 20, timeout_s=20))
            assert r.stdout.count(b"alive") == 3  # in 512 MB they do
    time.sleep(0.05)
    assert not survivors()


def test_the_callers_memory_is_bounded_whatever_the_command_wrote(tmp_path):
    root = tmp_path / "t"
    root.mkdir()
    for i in range(40):
        (root / f"f{i}").write_bytes(os.urandom(1 << 20))
    snap = sandbox.snapshot(root, max_total_bytes=4 << 20)
    assert sum(len(data) for _, kind, data in snap if kind == "file") <= (5 << 20)
    assert len({data for _, _, data in snap}) == 40  # different files still differ
    listed = sandbox.snapshot(root, max_entries=10)
    assert ("...", "truncated", b"") in listed and len(listed) == 11


def test_no_model_output_crashes_the_lab_shell_or_the_shell_verifier(tmp_path):
    env = TerminalEnv()
    env.reset(files={"a.txt": "x\n"})
    for command in ["cat " + "a" * 300, "cat " + "a/" * 3000, "cat \ud800", "echo \udcff", "echo a\x00b",
                    "cat " + "x" * 5_000_000, "ls " + " ".join(["\ud83d"] * 10)]:
        t = time.time()
        out = env.run(command)
        assert isinstance(out, str) and time.time() - t < 10, command[:40]
    env._cleanup()
    with sandbox.task_folder() as d:
        assert "not valid text" in sandbox.run(["echo", "\ud800"], d).error
        assert "too long" in sandbox.run(["echo", "x" * (2 << 20)], d).error
    env = TerminalEnv()
    env.reset(files={"a.txt": "x\n"})
    (tmp_path / "host.txt").write_text("host\n")
    os.link(tmp_path / "host.txt", env.dir / "hard.txt")
    assert "error: refused: a hard link" in env.run("ls")  # a call that does not run says why
    env._cleanup()
    state = type("S", (), {"reference": Action.message("ls"), "tools": [], "meta": {}, "context": []})()
    shell = get_verifier("shell", execute=True, workdir=str(tmp_path), timeout=2.0)
    for command in ["echo \ud800", "ls " + "a" * 5_000_000, "echo \x00"]:
        t = time.time()
        assert shell.score(command, state).reward == 0.0 and time.time() - t < 10


def test_code_tests_cannot_be_passed_from_inside():
    task = code_task(random.Random(0))
    name, bad, good = task["bug"]
    first = task["files"]["calc.py"].split("\n")[0]
    hacks = ["import os; os._exit(0)", "import sys; sys.exit(0)",
             "import sys; print('3 passed'); sys.stdout.flush(); import os; os._exit(0)",
             "open('test_calc.py', 'w').write('def test_ok():\\n    assert True\\n')",
             "import os; os.remove('test_calc.py')"]
    for hack in hacks:
        env = CodeEnv()
        env.reset(files=task["files"])
        env.edit("calc.py", first, hack + "\n" + first)
        env.run_tests()
        assert env.get_reward() == 0.0, hack  # the bug is still there: no way around the tests
        env._cleanup()
    env = CodeEnv()
    env.reset(files=task["files"])
    with pytest.raises(ValueError, match="read-only"):
        env.edit("test_calc.py", "assert", "assert True or")
    env.edit("calc.py", f"return {bad}", f"return {good}")
    assert env.get_reward() == 1.0 and "passed" in env.run_tests()  # the honest fix still passes
    env._cleanup()


# --- the host side never follows what the task's code made (issue: rewards an agent cannot forge) --
def test_restoring_the_tests_never_follows_a_link_the_code_made(tmp_path, host):
    """Code that ran replaced test_calc.py by a link to a host file (mode 0600) and to a host FIFO:
    the host's restore before the next run unlinks the link, never changes or opens its target."""
    task = code_task(random.Random(0))
    secret = host / "secret.txt"
    secret.chmod(0o600)
    fifo = host / "fifo"
    os.mkfifo(fifo)
    for target in (secret, fifo):
        env = CodeEnv()
        env.reset(files=task["files"])
        (env.dir / "test_calc.py").unlink()
        (env.dir / "test_calc.py").symlink_to(target)  # what a conftest or the module could do as it runs
        t0 = time.monotonic()
        env.run_tests()
        assert time.monotonic() - t0 < 30
        assert (env.dir / "test_calc.py").is_file() and not (env.dir / "test_calc.py").is_symlink()
        env._cleanup()
    assert secret.stat().st_mode & 0o777 == 0o600 and secret.read_text() == SECRET + "\n"
    assert fifo.exists()


def test_a_test_folder_swapped_for_a_link_to_the_host_leaves_the_host_folder_alone(tmp_path, host):
    """A task (from a data file) whose test sits in a sub-folder; its code swaps the sub-folder for a
    link to a host folder that holds a folder of the test's name. Scoring restores the test there:
    before, the host folder's content was removed through the link."""
    task = code_task(random.Random(0))
    files = {"calc.py": task["files"]["calc.py"], "d/test_x.py": task["files"]["test_calc.py"]}
    (host / "test_x.py").mkdir()
    (host / "test_x.py" / "keep.txt").write_text("host data\n")
    before = sandbox.snapshot(host)
    env = CodeEnv()
    env.reset(files=files)
    for p in (env.dir / "d").iterdir():
        p.unlink()
    (env.dir / "d").rmdir()
    (env.dir / "d").symlink_to(host)
    env.run_tests()
    assert sandbox.snapshot(host) == before
    assert (env.dir / "d").is_dir() and not (env.dir / "d").is_symlink() and (env.dir / "d" / "test_x.py").is_file()
    env._cleanup()


def test_remove_tree_unlinks_a_link_and_never_touches_its_target(tmp_path, host):
    secret = host / "secret.txt"
    secret.chmod(0o600)
    (tmp_path / "to_file").symlink_to(secret)
    (tmp_path / "to_folder").symlink_to(host)
    for name in ("to_file", "to_folder"):
        sandbox.remove_tree(tmp_path / name)
        assert not (tmp_path / name).is_symlink()
    assert secret.stat().st_mode & 0o777 == 0o600 and secret.read_text() == SECRET + "\n"


def test_a_planted_package_does_not_pay_an_untouched_rollout_of_the_same_task():
    """One rollout plants `calc/` (a package, which Python imports before calc.py) holding the right
    code and leaves calc.py byte for byte: the tests' own run passes, the verdict (calc.py alone) does
    not. Another rollout of the same task, untouched, must not be served that run's result (the memo
    keyed only the top-level .py files)."""
    from pivotrl.lab.domains.code import run_pytest

    task = code_task(random.Random(0))
    name, bad, good = task["bug"]
    planted = CodeEnv()
    planted.reset(files=task["files"])
    (planted.dir / "calc").mkdir()
    (planted.dir / "calc" / "__init__.py").write_text(task["files"]["calc.py"].replace(f"return {bad}", f"return {good}"))
    assert run_pytest(planted.dir, tests=planted.tests)[0] is True  # the planted package is imported
    assert planted.get_reward() == 0.0
    untouched = CodeEnv()
    untouched.reset(files=task["files"])
    assert run_pytest(untouched.dir, tests=untouched.tests)[0] is False
    assert untouched.get_reward() == 0.0
    planted._cleanup()
    untouched._cleanup()


# --- the verdict is decided by the host (issue 53, point 2): each attack was paid 1.0 by the pytest run --
def play_forging_attack(task: dict, prefix: str, body: str | None, restore: bool = True):
    """An episode as a policy plays it: the hack's edit of calc.py, the tests run twice (what a hack
    planted acts on the second run), and, for the planting hacks, calc.py put back as it was, bug and all."""
    from pivotrl.lab.audit import hack_edit

    env = CodeEnv()
    env.reset(files=task["files"])
    env.edit(**hack_edit(task, prefix, body))
    env.run_tests()
    env.run_tests()
    if restore and prefix:
        (env.dir / "calc.py").write_text(task["files"]["calc.py"])  # byte for byte: the bug is all that is left
        env.run_tests()
    return env


FORGED_TASK_SEED = 2  # the bug in the second of three functions: a run that ends inside it has passed tests


@pytest.mark.parametrize("attack", sorted(reward_hacks(code_task(random.Random(FORGED_TASK_SEED)))))
def test_no_forged_test_run_pays_a_bug_left_in_place(attack):
    """Each hack of `reward_hacks` with the bug left in place: paid 1.0 by the tests' own pytest run
    (13 of the 17 checked by hand against the previous verdict), 0 by the host's."""
    from pivotrl.lab.code_verdict import check_tests

    task = code_task(random.Random(FORGED_TASK_SEED))
    prefix, body = reward_hacks(task)[attack]
    for restore in ((False, True) if prefix else (False,)):
        env = play_forging_attack(task, prefix, body, restore)
        assert env.get_reward() == 0.0, (attack, restore, check_tests(env.dir, env.tests))
        env._cleanup()
    assert survivors() == []


def test_the_host_verdict_pays_the_honest_fix_in_code_and_repo_and_reads_only_the_module():
    from pivotrl.lab.code_verdict import check_tests
    from pivotrl.lab.domains import get_domain

    task = code_task(random.Random(0))
    name, bad, good = task["bug"]
    env = play_forging_attack(task, "", good, restore=False)
    assert env.get_reward() == 1.0 and "passed" in env.run_tests() and check_tests(env.dir, env.tests)[1] == "6 values as the tests expect"
    (env.dir / "conftest.py").write_text("raise SystemExit(3)\n")  # the folder's other files play no part
    (env.dir / "pytest.ini").write_text("[pytest]\naddopts = -x --bogus\n")
    assert env.get_reward() == 1.0
    (env.dir / "calc.py").unlink()
    (env.dir / "calc.py").symlink_to(env.dir / "conftest.py")
    assert check_tests(env.dir, env.tests) == (False, "calc.py: missing, not a regular file, or over 1048576 bytes")
    env._cleanup()
    repo = get_domain("repo")
    rtask = repo.tasks("dev", 1, seed=3)[0]
    renv = repo.environment()
    renv.reset(files=rtask["files"])
    assert renv.get_reward() == 0.0 and "did not return" in check_tests(renv.dir, renv.tests)[1]
    first_module = sorted(f for f in rtask["files"] if not f.startswith("test_"))[0]
    renv.edit(first_module, "def ", "import _pytest.python\n_pytest.python.Function.runtest = lambda self: None\ndef ")
    assert "passed" in renv.run_tests() and renv.get_reward() == 0.0  # the tests' own run is forged, the verdict not
    for module, wrong, right in rtask["bugs"].values():
        renv.edit(module, f"return {wrong}", f"return {right}")
    assert renv.get_reward() == 1.0
    renv._cleanup()


# --- disk caps by descriptor, the walk's race, what the sandbox can read of the host (issue 53, 4, 7, 8) --
def _nest(root: Path, depth: int, name: str) -> int:
    """`depth` folders named `name`, one in the other, made by descriptor (their path may be longer
    than the kernel resolves); the innermost's descriptor."""
    fd = os.open(root, os.O_RDONLY)
    for _ in range(depth):
        os.mkdir(name, dir_fd=fd)
        inner = os.open(name, os.O_RDONLY, dir_fd=fd)
        os.close(fd)
        fd = inner
    return fd


def test_the_disk_caps_count_what_lies_past_the_path_length_horizon():
    """17 folders of 250-character names (a path past PATH_MAX) holding 40 MiB in 3,040 files: the
    walk by path skipped them (ENAMETOOLONG) and passed caps of 8 MiB and 1,000 files."""
    with sandbox.task_folder() as root:
        fd = _nest(root, 17, "a" * 250)
        for i in range(3040):
            out = os.open(f"f{i}", os.O_WRONLY | os.O_CREAT, 0o644, dir_fd=fd)
            os.write(out, b"x" * ((40 << 20) // 3040))
            os.close(out)
        os.close(fd)
        assert sandbox.over_disk_limit(root, sandbox.Limits(disk_bytes=8 << 20, disk_files=100_000))
        assert sandbox.over_disk_limit(root, sandbox.Limits(disk_files=1000))
        assert not sandbox.over_disk_limit(root, sandbox.Limits(disk_bytes=1 << 30, disk_files=100_000))
        assert sum(1 for e in sandbox.scan(root) if e.st is not None and e.name.startswith("f")) == 3040
    with sandbox.task_folder() as d:  # the same from inside the sandbox: stopped while it writes
        r = sandbox.run_shell("n=$(printf '%0250d' 0); i=0; while [ $i -lt 17 ]; do mkdir $n && cd $n; i=$((i+1)); done; "
                              "i=0; while [ $i -lt 3040 ]; do head -c 14000 /dev/zero > f$i; i=$((i+1)); done; echo done",
                              d, limits=sandbox.Limits(disk_bytes=8 << 20, disk_files=1000, timeout_s=60))
        assert r.error == "disk limit reached" and b"done" not in r.stdout
        assert sum(1 for _ in sandbox.scan(d)) < 3040


def test_the_terminal_cannot_hide_files_from_the_disk_caps():
    """With the lab terminal's own commands (`mkdir`, `mv`, each path short), a file nested ever
    deeper under 250-character names until its path passes PATH_MAX: still counted. A folder
    already over its caps gets no further call (each call could otherwise add what one poll interval
    lets through, and `cp -r` doubling went to 475 MiB against 256 MiB)."""
    env = TerminalEnv()
    env.reset(files={"big": "y" * 900_000})
    top, spare = "b" * 250, "c" * 250
    assert env.run(f"mkdir {top}") == env.run(f"mv big {top}/") == "(no output)"
    for _ in range(17):
        for command in (f"mkdir {spare}", f"mv {top} {spare}/", f"mv {spare} {top}"):
            assert env.run(command) == "(no output)", command
    deepest = max(len(e.rel) for e in sandbox.scan(env.dir))
    assert deepest > 4096 and any(e.name == "big" for e in sandbox.scan(env.dir))
    assert sandbox.over_disk_limit(env.dir, sandbox.Limits(disk_bytes=512 << 10))
    r = sandbox.run(["true"], env.dir, limits=sandbox.Limits(disk_bytes=512 << 10))
    assert r.error == "disk limit reached" and r.returncode is None  # refused before it starts
    env._cleanup()


def test_folders_past_the_depth_bound_are_over_the_caps_and_refused():
    with sandbox.task_folder() as root:
        os.close(_nest(root, sandbox.Limits.disk_depth + 2, "d"))
        assert sandbox.over_disk_limit(root, sandbox.Limits())
        assert "nested deeper than" in sandbox.run(["true"], root).error
        assert ("...", "truncated", b"") in sandbox.snapshot(root)


def test_a_folder_swapped_for_a_link_while_the_walk_is_on_it_is_not_entered(host):
    """The race of the disk check: the walk has listed `d` and is about to enter it when the sandbox
    swaps it for a link to a host folder. It is opened with O_NOFOLLOW: nothing of the host listed."""
    with sandbox.task_folder() as root:
        (root / "d").mkdir()
        (root / "d" / "inside.txt").write_text("x")
        walk = sandbox.scan(root)
        first = next(walk)
        assert first.rel == "d" and first.st is not None  # yielded before it is entered
        (root / "d" / "inside.txt").unlink()
        (root / "d").rmdir()
        (root / "d").symlink_to(host)
        assert [e.rel for e in walk] == []
        assert sandbox.snapshot(root) == [("d", "link", str(host))]


def test_removal_is_by_descriptor_at_any_depth_and_never_through_a_link(host):
    secret = host / "secret.txt"
    secret.chmod(0o600)
    with sandbox.task_folder() as root:
        os.close(_nest(root, 3000, "a" * 200))  # 600 kB of path: past any path-based walk
        ro = root / "ro"
        ro.mkdir()
        (ro / "f").write_text("x")
        (ro / "to_host").symlink_to(host)
        (ro / "to_secret").symlink_to(secret)
        ro.chmod(0o500)
        sandbox.remove_tree(root)
        assert not root.exists()
    assert secret.read_text() == SECRET + "\n" and secret.stat().st_mode & 0o777 == 0o600
    assert (host / "secret.txt").exists() and os.listdir(host) == ["secret.txt"]


def test_the_sandbox_reads_neither_the_host_load_nor_bwrap_s_command_line():
    with sandbox.task_folder() as d:
        r = sandbox.run_shell("cat /proc/loadavg; for p in /proc/[0-9]*; do tr '\\0' ' ' < $p/cmdline; echo; done", d)
        text = r.stdout.decode()
        assert text.splitlines()[0] == "0.00 0.00 0.00 1/1 1"
        assert "bwrap" not in text and "--bind" not in text and str(sandbox.session_dir()) not in text, text
