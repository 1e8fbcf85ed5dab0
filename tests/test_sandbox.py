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
    """Live processes in another PID namespace than ours: only the sandbox makes those."""
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
    assert len(snap) == 1502
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
