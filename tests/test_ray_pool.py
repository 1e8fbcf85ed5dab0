"""The Ray pool survives a lost worker and a slow one: a local 2-worker pool with the transformers
backend on the CPU and the tiny model, workers SIGKILLed or SIGSTOPped mid-run; the records must be
those of an undisturbed run, and past the bounds the error names the batch and the journal resumes."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

ray = pytest.importorskip("ray")

from pivotrl import DataError  # noqa: E402
from pivotrl.pivots import write_states  # noqa: E402
from pivotrl.pivots.profile import journal_path, meta_path, profile_states, read_records  # noqa: E402
from pivotrl.sampling import Prompt, RaySampler, SamplingParams, get_sampler  # noqa: E402
from pivotrl.sampling.ray_pool import PoolError  # noqa: E402

PARAMS = SamplingParams(n=3, max_tokens=12)


@pytest.fixture(scope="module")
def local_ray():
    # 4 CPUs for 2 workers: a replacement actor must find a CPU while the lost one is reaped
    ray.init(num_cpus=4, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def states(sample_states):
    return sample_states[:16]


def profile(states, sampler, out):
    return profile_states(states, sampler, "tool_call", k=3, params=PARAMS, output=out, keep_samples=True,
                          batch_size=2)


def same(a, b):
    """Records equal in everything but the wall-clock they took and the names the CLI records."""
    strip = lambda recs: [{k: v for k, v in r.items() if k not in ("seconds", "model", "verifier")}  # noqa: E731
                          for r in recs]
    return strip(a) == strip(b)


@pytest.fixture(scope="module")
def undisturbed(tiny_model, states, tmp_path_factory):
    sampler = get_sampler("transformers", model=tiny_model, num_threads=1)
    return profile(states, sampler, tmp_path_factory.mktemp("local") / "p.jsonl")


def pool(tiny_model, **kw):
    return RaySampler("transformers", {"model": tiny_model, "num_threads": 1}, num_workers=2, **kw)


def pid(worker):
    return ray.get(worker.__ray_call__.remote(lambda self: os.getpid()))


class OnPull:
    """Runs `action` when batch `at` is pulled from the queue (the pool pulls lazily, as workers free)."""

    def __init__(self, inner, at, action):
        self.inner, self.at, self.action = inner, at, action
        self.stats = inner.stats  # the same object: profile_states writes it into the bill

    def sample_batches(self, batches):
        def pulled():
            for i, batch in enumerate(batches):
                if i == self.at:
                    self.action()
                yield batch
        return self.inner.sample_batches(pulled())


def test_a_worker_sigkilled_mid_run_is_replaced_and_the_records_do_not_change(local_ray, tiny_model, states,
                                                                               undisturbed, tmp_path):
    p = pool(tiny_model)
    p.max_ahead = 1  # the bound on batches run ahead of the oldest not yet yielded, met at every batch (a CLI run met it)
    try:
        victim = pid(p.workers[0])
        records = profile(states, OnPull(p, 3, lambda: os.kill(victim, signal.SIGKILL)), tmp_path / "p.jsonl")
        assert p.stats.worker_restarts == 1 and p.stats.batches == 8
        assert pid(p.workers[0]) != victim
    finally:
        p.close()
    assert same(records, undisturbed)
    assert json.loads(meta_path(tmp_path / "p.jsonl").read_text())["samples"] == 16 * 3  # each state once


def test_a_stuck_worker_is_killed_after_the_timeout_and_its_batch_goes_elsewhere(local_ray, tiny_model, states,
                                                                                 undisturbed, tmp_path):
    p = pool(tiny_model, worker_timeout_s=8)
    stopped = []
    try:
        victim = pid(p.workers[1])
        t0 = time.monotonic()
        records = profile(states, OnPull(p, 2, lambda: (os.kill(victim, signal.SIGSTOP), stopped.append(victim))),
                          tmp_path / "p.jsonl")
        assert time.monotonic() - t0 < 120
        assert p.stats.timeouts == 1 and p.stats.worker_restarts == 1 and p.stats.retried_batches >= 1
    finally:
        for v in stopped:  # if the pool did not kill it, do not leave a stopped process behind
            try:
                os.kill(v, signal.SIGKILL)
            except ProcessLookupError:
                pass
        p.close()
    assert same(records, undisturbed)
    meta = json.loads(meta_path(tmp_path / "p.jsonl").read_text())
    assert meta["samples"] == 16 * 3 and meta["pool"]["timeouts"] == 1


def test_every_worker_dead_is_a_clear_error_and_the_journal_resumes_exactly(local_ray, tiny_model, states,
                                                                           undisturbed, tmp_path):
    out = tmp_path / "p.jsonl"
    p = pool(tiny_model, max_restarts=0)
    try:
        victims = [pid(w) for w in p.workers]
        with pytest.raises(DataError, match=r"every Ray worker is lost .* run the same command again to resume"):
            profile(states, OnPull(p, 4, lambda: [os.kill(v, signal.SIGKILL) for v in victims]), out)
    finally:
        p.close()
    kept = read_records(journal_path(out), journal=True)
    assert 0 < len(kept) < 16 and not out.exists()
    p = pool(tiny_model)
    try:
        resumed = profile(states, p, out)
        assert p.stats.batches == 8 - len(kept) // 2  # only what the journal did not hold
    finally:
        p.close()
    assert same(resumed, undisturbed)


def test_a_batch_that_keeps_failing_stops_the_run_naming_it(local_ray, tiny_model):
    p = pool(tiny_model, max_batch_retries=1)
    good = ([Prompt([{"role": "user", "content": "hi"}], [])], PARAMS, 0)
    bad = ([Prompt("not a list of messages", [])], PARAMS, 1)
    try:
        with pytest.raises(PoolError, match=r"batch 1 failed 2 times \(last: sampling raised") as err:
            list(p.sample_batches([good, bad, good]))
        assert err.value.batch == 1 and p.stats.worker_restarts == 0  # the worker lived: not replaced
    finally:
        p.close()


def run_workers(root: int) -> list[int]:
    """The Ray worker processes (`ray::_Worker...`) descended from process `root` (the run's own
    Ray: its raylet is a child of the driver), from /proc."""
    parents, titles = {}, {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                parents[int(entry)] = int(open(f"/proc/{entry}/stat").read().rsplit(")", 1)[1].split()[1])
                titles[int(entry)] = open(f"/proc/{entry}/cmdline", "rb").read().decode(errors="replace")
            except (OSError, IndexError, ValueError):
                continue

    def descends(pid):
        while pid and pid in parents:
            if pid == root:
                return True
            pid = parents[pid]
        return False

    return sorted(p for p, title in titles.items() if title.startswith("ray::_Worker") and descends(p))


def test_pivotrl_profile_with_ray_survives_a_worker_killed_from_outside(tmp_path, tiny_model, sample_states):
    # 20 batches: results come out in order, up to 8 batches at once behind a slow one, so the kill at
    # the journal's first batch always finds work left to do
    states = sample_states[:40]
    undisturbed = profile(states, get_sampler("transformers", model=tiny_model, num_threads=1), tmp_path / "local.jsonl")
    write_states(tmp_path / "states.jsonl", states)
    out = tmp_path / "ray.jsonl"
    cmd = [sys.executable, "-m", "pivotrl.cli", "profile", "states.jsonl", "-o", out.name, "--model", tiny_model,
           "--k", "3", "--max-tokens", "12", "--keep-samples", "true", "--batch-size", "2", "--verifier", "tool_call",
           "--ray", "true", "--num-workers", "2", "-B", "num_threads=1"]
    proc = subprocess.Popen(cmd, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    killed = None
    try:
        deadline = time.monotonic() + 300
        while killed is None and proc.poll() is None and time.monotonic() < deadline:
            journal = journal_path(out)
            if journal.exists() and journal.read_text().count("\n") >= 2:  # a batch is done: kill a worker
                found = run_workers(proc.pid)  # this run's own: another Ray here may have workers too
                if found:
                    killed = found[0]
                    os.kill(killed, signal.SIGKILL)
            time.sleep(0.1)
        stdout, stderr = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert killed is not None, "the run ended before a worker could be killed"
    assert proc.returncode == 0, stderr[-3000:]
    pool_line = next((ln for ln in stdout.splitlines() if ln.startswith("Ray pool:")), stdout[-2000:])
    assert "1 workers restarted" in pool_line, pool_line
    assert same(read_records(out), undisturbed)
