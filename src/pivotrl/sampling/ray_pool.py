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
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Iterator
from pathlib import Path

from pivotrl.errors import DataError
from pivotrl.sampling.base import Prompt, PromptResult, Sampler, SamplingParams


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
                 cpus_per_worker: float = 1.0, address: str | None = None):
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
        options = worker_options(backend, options)
        actor = ray.remote(num_gpus=gpus, num_cpus=cpus_per_worker)(_Worker)
        self.workers = [actor.remote(backend, options) for _ in range(num_workers)]

    def sample(self, prompts: list[Prompt], params: SamplingParams, seed: int | None = None) -> list[PromptResult]:
        return self._ray.get(self.workers[0].sample.remote(prompts, params, seed))

    def sample_batches(self, batches: Iterable[tuple[list[Prompt], SamplingParams, int | None]]
                       ) -> Iterator[list[PromptResult]]:
        """Keep every worker busy; yield results in submission order."""
        in_flight: deque = deque()
        for i, (prompts, params, seed) in enumerate(batches):
            in_flight.append(self.workers[i % len(self.workers)].sample.remote(prompts, params, seed))
            if len(in_flight) >= 2 * len(self.workers):
                yield self._ray.get(in_flight.popleft())
        while in_flight:
            yield self._ray.get(in_flight.popleft())

    def close(self) -> None:
        for w in self.workers:
            self._ray.kill(w)
        if self._owns_ray:
            self._ray.shutdown()
