"""Fan sampling out over a pool of Ray actors, one sampler (of any backend) each.

The driver keeps the order and the batching; workers only sample. A batch goes whole to one
worker with its own seed, so results are the same as the local path's, batch for batch. Works on
a local Ray started for the run or on an existing cluster (`address`).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Iterator

from pivotrl.errors import DataError
from pivotrl.sampling.base import Prompt, PromptResult, Sampler, SamplingParams


class _Worker:
    def __init__(self, backend: str, options: dict):
        import pivotrl.sampling  # noqa: F401  (registers the backends in the worker process)
        from pivotrl.sampling.base import get_sampler

        self.sampler = get_sampler(backend, **options)

    def sample(self, prompts, params, seed):
        return self.sampler.sample(prompts, params, seed)


class RaySampler(Sampler):
    def __init__(self, backend: str, options: dict, num_workers: int = 2, gpus_per_worker: float = 0.0,
                 cpus_per_worker: float = 1.0, address: str | None = None):
        try:
            import ray
        except ImportError:
            raise DataError("--ray needs Ray: pip install 'pivotrl[ray]'") from None
        self._ray = ray
        self._owns_ray = not ray.is_initialized()
        if self._owns_ray:
            ray.init(address=address, include_dashboard=False, log_to_driver=False,
                     runtime_env={"env_vars": {"TOKENIZERS_PARALLELISM": "false"}})
        actor = ray.remote(num_gpus=gpus_per_worker, num_cpus=cpus_per_worker)(_Worker)
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
