"""Fan sampling out over a pool of Ray actors, one sampler (of any backend) each.

The driver keeps the order and the batching; workers only sample. A batch goes whole to one
worker with its own seed, so results are the same as the local path's, batch for batch. Works on
a local Ray started for the run or on an existing cluster (`address`), to which the pivotrl package
is shipped in the job's runtime environment (Ray's `py_modules`).

GPUs: each worker asks Ray for its GPUs, and Ray makes only those visible to it. A vLLM engine
needs whole GPUs, at least `tensor_parallel_size` of them; a transformers worker on a cluster with
GPUs takes one by default. A worker with no GPU is told to use the CPU, never left to find GPU 0.
A tensor-parallel vLLM engine runs its shards as processes of its own actor (vLLM's "mp" executor),
on the GPUs Ray gave that actor, all on one node: vLLM's Ray executor would look for a placement
group that a vLLM v1 engine subprocess cannot see from inside an actor (vllm-project/vllm#30016).

Lost and slow workers. On a cluster a node is preempted, a GPU falls off the bus, vLLM runs out of
memory. Work goes to whichever worker is free (one batch each at a time), results still come out
in submission order. A worker that dies (or, with `worker_timeout_s`, makes no progress for that
long and is killed) is replaced by a new actor, up to `max_restarts` times per worker, and its batch
goes back to the front of the queue for the next free worker; a batch whose sampling raised is
retried the same way. Each batch carries its own seed, so a retried batch gives the records an
undisturbed run gives. Past the bounds (a batch failing more than `max_batch_retries` times, every
worker lost) `PoolError` names the batch and why; `pivotrl profile`'s journal keeps every batch
finished before it, so rerunning the command resumes. Why not Ray's own `max_restarts` and
`max_task_retries`: a retried task waits for *its* actor to restart (reloading the model) while
other workers stand free, and the driver would not know which batch keeps killing workers.
"""

from __future__ import annotations

import time
from collections import Counter, deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from pivotrl.errors import DataError
from pivotrl.sampling.base import Prompt, PromptResult, Sampler, SamplingParams


class PoolError(DataError):
    """The pool could not finish a batch within its bounds; `batch` is its index in submission order."""

    def __init__(self, message: str, batch: int):
        super().__init__(message)
        self.batch = batch


@dataclass
class PoolStats:
    batches: int = 0           # batches finished
    retried_batches: int = 0   # batches sampled more than once (each state's samples are kept once)
    retries: int = 0           # resubmissions in all
    worker_restarts: int = 0   # actors started in place of lost ones
    timeouts: int = 0          # workers killed for making no progress


class _Worker:
    def __init__(self, backend: str, options: dict):
        # In the worker process this first imports the package `pivotrl.sampling`, whose `__init__`
        # registers the backends.
        from pivotrl.sampling.base import get_sampler

        self.sampler = get_sampler(backend, **options)

    def sample(self, prompts, params, seed):
        return self.sampler.sample(prompts, params, seed)


def gpus_for_workers(backend: str, options: dict, gpus_per_worker: float | None, cluster_gpus: float,
                     num_workers: int) -> float:
    """GPUs each worker asks Ray for; a DataError for a placement that cannot work."""
    if backend == "vllm":
        tp = int(options.get("tensor_parallel_size", 1))
        gpus = float(tp if gpus_per_worker is None else gpus_per_worker)
        if gpus != int(gpus) or gpus < tp:
            raise DataError(f"a vLLM engine needs whole GPUs, at least tensor_parallel_size={tp}: "
                            f"--gpus-per-worker {gpus_per_worker} cannot work")
    elif gpus_per_worker is None:
        gpus = 1.0 if backend == "transformers" and cluster_gpus >= 1 else 0.0
    else:
        gpus = float(gpus_per_worker)
    if gpus > 0 and gpus * num_workers > cluster_gpus:
        raise DataError(f"{num_workers} workers x {gpus:g} GPUs need {gpus * num_workers:g} GPUs; the Ray cluster "
                        f"has {cluster_gpus:g} (use fewer --num-workers, or fewer --gpus-per-worker)")
    return gpus


def worker_options(backend: str, options: dict) -> dict:
    """The sampler options a worker starts with (see the module's note on tensor parallelism)."""
    if backend == "vllm" and int(options.get("tensor_parallel_size", 1)) > 1:
        return {"distributed_executor_backend": "mp", **options}
    return dict(options)


def runtime_env(address: str | None) -> dict:
    """The workers' environment: on an existing cluster, this pivotrl package travels with the job."""
    env: dict = {"env_vars": {"TOKENIZERS_PARALLELISM": "false"}}
    if address:
        env["py_modules"] = [str(Path(__file__).resolve().parent.parent)]
    return env


class RaySampler(Sampler):
    def __init__(self, backend: str, options: dict, num_workers: int = 2, gpus_per_worker: float | None = None,
                 cpus_per_worker: float = 1.0, address: str | None = None, max_restarts: int = 3,
                 max_batch_retries: int = 2, worker_timeout_s: float | None = None):
        try:
            import ray
        except ImportError:
            raise DataError("--ray needs Ray: pip install 'pivotrl[ray]'") from None
        self._ray = ray
        self._owns_ray = not ray.is_initialized()
        if self._owns_ray:
            ray.init(address=address, include_dashboard=False, log_to_driver=False, runtime_env=runtime_env(address))
        gpus = gpus_for_workers(backend, options, gpus_per_worker, ray.cluster_resources().get("GPU", 0.0), num_workers)
        self.gpus_per_worker = gpus
        if backend == "transformers":  # say where it runs: a worker without a GPU must not find GPU 0 by itself
            options = {**options, "device": options.get("device") or ("cuda" if gpus > 0 else "cpu")}
        self._start = lambda: ray.remote(num_gpus=gpus, num_cpus=cpus_per_worker)(_Worker).remote(
            backend, worker_options(backend, options))
        self.workers = [self._start() for _ in range(num_workers)]
        self.max_restarts, self.max_batch_retries = max_restarts, max_batch_retries
        self.worker_timeout_s = worker_timeout_s
        self.restarts = [0] * num_workers
        self.max_ahead = 4 * num_workers  # batches submitted, at most, past the oldest not yet yielded
        self.stats, self.last_loss = PoolStats(), ""

    def sample(self, prompts: list[Prompt], params: SamplingParams, seed: int | None = None) -> list[PromptResult]:
        return next(self.sample_batches([(prompts, params, seed)]))

    def sample_batches(self, batches: Iterable[tuple[list[Prompt], SamplingParams, int | None]]
                       ) -> Iterator[list[PromptResult]]:
        """Each free worker takes the next batch (a lost worker's batch first); results in
        submission order. At most `max_ahead` batches are submitted past the oldest not yet yielded."""
        from ray.exceptions import RayActorError, RayError

        ray, source = self._ray, iter(batches)
        free = deque(i for i, w in enumerate(self.workers) if w is not None)
        retry: deque = deque()        # (index, batch) of lost batches, resubmitted first
        in_flight: dict = {}          # ref -> (worker slot, index, batch, submitted at)
        finished: dict = {}           # index -> results not yet yielded
        tries: Counter = Counter()
        submitted = next_out = 0
        exhausted = False
        while True:
            while free and (retry or not exhausted):
                if retry:
                    index, batch = retry.popleft()
                elif submitted - next_out >= self.max_ahead:
                    break  # a slow batch holds the line: do not run further ahead of it
                else:
                    batch = next(source, None)
                    if batch is None:
                        exhausted = True
                        break
                    index, submitted = submitted, submitted + 1
                slot = free.popleft()
                in_flight[self.workers[slot].sample.remote(*batch)] = (slot, index, batch, time.monotonic())
            while next_out in finished:
                self.stats.batches += 1
                yield finished.pop(next_out)
                next_out += 1
            if exhausted and not retry and not in_flight:
                return
            if not in_flight and free:
                continue  # nothing running, a worker free: the results just yielded let more work in
            if not in_flight:
                index = retry[0][0] if retry else next_out
                raise PoolError(f"every Ray worker is lost (each restarted {self.max_restarts} time(s); the last: "
                                f"{self.last_loss}); batch {index} and those after it were not sampled", index)
            wait = min(5.0, self.worker_timeout_s or 5.0)
            ready, _ = ray.wait(list(in_flight), num_returns=1, timeout=wait)
            for ref in ready:
                slot, index, batch, _ = in_flight.pop(ref)
                try:
                    finished[index] = ray.get(ref)
                    free.append(slot)
                except RayActorError as exc:
                    self._lost(slot, index, batch, f"its worker died: {_first_line(exc)}", tries, retry, free, dead=True)
                except RayError as exc:  # the sampler raised (a RayTaskError); the worker lives
                    self._lost(slot, index, batch, f"sampling raised: {_first_line(exc)}", tries, retry, free, dead=False)
            if self.worker_timeout_s:
                now = time.monotonic()
                for ref, (slot, index, batch, t0) in list(in_flight.items()):
                    if now - t0 > self.worker_timeout_s:
                        del in_flight[ref]
                        self.stats.timeouts += 1
                        self._lost(slot, index, batch, f"no result after {self.worker_timeout_s:g} s", tries, retry,
                                   free, dead=True)

    def _lost(self, slot: int, index: int, batch, why: str, tries: Counter, retry: deque, free: deque,
              dead: bool) -> None:
        """Batch `index` failed on worker `slot`: back to the front of the queue (within its bound),
        and a dead or stuck worker replaced by a new actor (within its own)."""
        tries[index] += 1
        self.last_loss = why
        if tries[index] > self.max_batch_retries:
            raise PoolError(f"batch {index} failed {tries[index]} times (last: {why}); stopping: past "
                            f"max_batch_retries={self.max_batch_retries}", index)
        self.stats.retries += 1
        self.stats.retried_batches += tries[index] == 1
        retry.appendleft((index, batch))
        if not dead:
            free.append(slot)
            return
        try:
            self._ray.kill(self.workers[slot], no_restart=True)
        except Exception:  # already gone
            pass
        if self.restarts[slot] >= self.max_restarts:
            self.workers[slot] = None  # retired: this slot takes no more work
            return
        self.restarts[slot] += 1
        self.stats.worker_restarts += 1
        self.workers[slot] = self._start()
        free.append(slot)

    def close(self) -> None:
        for w in self.workers:
            if w is not None:
                self._ray.kill(w)
        if self._owns_ray:
            self._ray.shutdown()


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return (text.splitlines() or [type(exc).__name__])[0][:200]
