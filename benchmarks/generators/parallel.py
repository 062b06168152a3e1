"""Run the benchmark's independent trainings side by side: ``jobs`` worker processes, ``threads`` torch threads each.

A :class:`Task` is one training (an expert, the mouth reader, a generator run) with the keys of
the tasks it needs; its arguments may be computed from their results (the sync-loss weight a run
uses is chosen from the validation scores of the sweep runs). :func:`run_tasks` starts tasks in
list order as soon as their dependencies are done. Every task seeds itself and runs with the
same thread count, so results do not depend on ``jobs`` or on which worker ran what.
"""
from __future__ import annotations

import multiprocessing
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import torch


@dataclass(frozen=True)
class Task:
    """``fn(*args)`` once the tasks named in ``deps`` are done; ``args`` is a tuple or a function of
    ``{key: result}`` of the finished tasks returning one. ``fn`` and the arguments must pickle."""

    key: str
    fn: Callable[..., Any]
    args: tuple | Callable[[dict[str, Any]], tuple] = ()
    deps: tuple[str, ...] = ()

    def arguments(self, results: dict[str, Any]) -> tuple:
        return self.args(results) if callable(self.args) else self.args


def _prepare_process(threads: int) -> None:
    """What every task runs under, in a worker or in this process: ``threads`` torch threads and
    deterministic algorithms (as ``pretrain.train`` sets them)."""
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(True, warn_only=True)


def run_tasks(tasks: Sequence[Task], jobs: int = 1, threads: int = 1,
              on_done: Callable[[str, Any], None] = lambda key, result: None) -> dict[str, Any]:
    """Run every task (``jobs`` at a time; 1: in this process, in list order); returns ``{key: result}``.

    ``on_done(key, result)`` is called in this process as each task finishes. A failing task raises
    its exception here after the running ones finish.
    """
    keys = [task.key for task in tasks]
    unknown = {dep for task in tasks for dep in task.deps} - set(keys)
    if jobs < 1 or len(set(keys)) != len(keys) or unknown:
        raise ValueError(f"run_tasks: expected jobs >= 1 and unique task keys whose dependencies are tasks, got "
                         f"jobs={jobs}, duplicate keys {sorted({k for k in keys if keys.count(k) > 1})}, "
                         f"unknown dependencies {sorted(unknown)}")
    results: dict[str, Any] = {}
    pending = list(tasks)
    if jobs == 1:
        _prepare_process(threads)
        while pending:
            task = next((t for t in pending if all(dep in results for dep in t.deps)), None)
            if task is None:
                raise ValueError(f"run_tasks: dependency cycle among {[t.key for t in pending]}")
            pending.remove(task)
            results[task.key] = task.fn(*task.arguments(results))
            on_done(task.key, results[task.key])
        return results
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(jobs, mp_context=context, initializer=_prepare_process, initargs=(threads,)) as pool:
        running: dict[Future, str] = {}
        while pending or running:
            for task in [t for t in pending if all(dep in results for dep in t.deps)][: jobs - len(running)]:
                pending.remove(task)
                running[pool.submit(task.fn, *task.arguments(results))] = task.key
            if not running:
                raise ValueError(f"run_tasks: dependency cycle among {[t.key for t in pending]}")
            done, _ = wait(running, return_when=FIRST_COMPLETED)
            for future in done:
                key = running.pop(future)
                results[key] = future.result()
                on_done(key, results[key])
    return results
