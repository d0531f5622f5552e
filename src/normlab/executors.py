"""Where an experiment's runs are trained: here, in local worker processes, or as Ray tasks.

A cell is one training (a variant, a seed, a point of the grid) described by plain values, so it
can travel to another process or machine. Every executor hands each finished cell back to the
driver through ``on_result``, in the driver's process, and only the driver writes the folder's
results.json. Local workers die with the driver and hold the folder's lock while they live. Checkpoints: local workers share the driver's disk and write their own cell's
checkpoint after every epoch (so a killed sweep resumes mid-cell); a Ray task may run on
another machine, so it trains into a scratch file and returns the checkpoint's bytes for the
driver to write.

No scheduling of our own: ``concurrent.futures.ProcessPoolExecutor`` hands cells to free local
workers; Ray places tasks by their CPU/GPU needs, retries tasks whose worker died
(``max_retries``) and reports failures.
"""

from __future__ import annotations

import multiprocessing
import os
import socket
import tempfile
import time
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from .errors import UserError

EXECUTORS = ("local", "ray")


@dataclass(frozen=True)
class Cell:
    """One training of an experiment, in plain values."""
    key: str                           # unique within the experiment, e.g. "b32-gn4-seed2"
    variant: str
    seed: int
    cfg: dict                          # TrainConfig fields, this cell's axis values and lr already set
    label: str                         # in progress lines, e.g. "gn:4 seed 2 b32"
    checkpoint: str | None = None      # path on a shared disk; None: train into a scratch file
    resume_from: bytes | None = None   # a partial checkpoint to continue from (scratch-file cells)
    keep_predictions: bool = False     # return the finished model's test-set predictions


@dataclass
class CellResult:
    key: str
    record: dict                       # the cell's entry in results.json
    checkpoint: bytes | None = None    # for the driver to write, when trained into a scratch file
    predictions: np.ndarray | None = None   # with keep_predictions, of a finished cell
    confidences: np.ndarray | None = None


@dataclass
class PortableDataset:
    """A Dataset as numpy arrays: pickles to a worker or Ray's object store without shared memory."""
    name: str
    split: str
    images: np.ndarray
    labels: np.ndarray
    source: str

    @classmethod
    def of(cls, dataset) -> "PortableDataset":
        return cls(dataset.info.name, dataset.split, dataset.images.numpy(), dataset.labels.numpy(), str(dataset.source))

    def dataset(self):
        import torch
        from .data import Dataset, dataset_info
        # np.array copies: arrays from Ray's object store are read-only.
        return Dataset(dataset_info(self.name), self.split, torch.from_numpy(np.array(self.images)),
                       torch.from_numpy(np.array(self.labels)), Path(self.source))


@dataclass
class Splits:
    """The data every cell trains on: training part, validation part (None with --val 0), test set."""
    train: object
    val: object
    test: object

    def portable(self) -> "Splits":
        return Splits(*(None if d is None else PortableDataset.of(d) for d in (self.train, self.val, self.test)))

    def local(self) -> "Splits":
        return Splits(*(None if d is None else d.dataset() for d in (self.train, self.val, self.test)))


def available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:            # macOS, Windows
        return os.cpu_count() or 1


def threads_per_worker(workers: int, cores: int | None = None) -> int:
    """Split the cores evenly: N workers each running torch on all cores would fight over them."""
    return max(1, (cores or available_cores()) // max(1, workers))


def worker_device(index: int, requested: str, gpu_count: int) -> str:
    """The device of local worker ``index``: with several GPUs, workers take them round-robin
    (worker 0 cuda:0, worker 1 cuda:1, ...). An explicit ``cuda:K`` or ``cpu`` is kept."""
    if requested == "cpu" or requested.startswith("cuda:"):
        return requested
    if gpu_count == 0:
        return "cpu" if requested == "auto" else requested
    return f"cuda:{index % gpu_count}"


def where_trained(device: str, worker) -> dict:
    import torch
    return {"device": device, "host": socket.gethostname(), "pid": os.getpid(), "threads": torch.get_num_threads(),
            "worker": worker}


def cell_result(cell: Cell, outcome, where: dict, checkpoint: bytes | None = None) -> CellResult:
    result = CellResult(cell.key, {**outcome.record, **where}, checkpoint)
    if cell.keep_predictions and outcome.final is not None:
        result.predictions = outcome.final.predictions.numpy()
        result.confidences = outcome.final.confidences.numpy()
    return result


def train_cell(cell: Cell, data: Splits, device: str, worker=0, on_epoch=None) -> CellResult:
    """Train one cell with normlab's training loop; the record says where it ran (from its
    first epoch on, so a run killed after its last epoch has the record of one that was not)."""
    from .config import TrainConfig
    from .train import resolve_device, train_run
    from .variants import Variant

    cfg = TrainConfig(**cell.cfg)
    variant = Variant.parse(cell.variant)
    where = where_trained(device, worker)
    if cell.checkpoint is not None:
        outcome = train_run(variant, cell.seed, cfg, data.train, data.test, resolve_device(device), checkpoint=Path(cell.checkpoint),
                            label=cell.label, on_epoch=on_epoch and (lambda record: on_epoch({**record, **where})), val=data.val)
        saved = None
    else:
        with tempfile.TemporaryDirectory(prefix="normlab-cell-") as scratch:
            path = Path(scratch) / f"{cell.key}.pt"
            if cell.resume_from is not None:
                path.write_bytes(cell.resume_from)
            outcome = train_run(variant, cell.seed, cfg, data.train, data.test, resolve_device(device),
                                checkpoint=path, label=cell.label, val=data.val)
            saved = path.read_bytes() if path.exists() else None
    return cell_result(cell, outcome, where, saved)


def stack_groups(cells: list[Cell], device: str) -> list[list[Cell]]:
    """Cells that differ only in their seed, grouped as stacked.plan_stacks says pays on this
    device (several seeds trained as one grouped network); a group of one trains alone."""
    import torch
    from .stacked import plan_stacks
    from .variants import Variant
    alike: dict[tuple, list[Cell]] = {}
    for cell in cells:
        same = (cell.variant, cell.checkpoint is None, sorted((k, repr(v)) for k, v in cell.cfg.items() if k != "seed"))
        alike.setdefault(repr(same), []).append(cell)
    groups = []
    for members in alike.values():
        by_seed = {c.seed: c for c in members}
        cfg = members[0].cfg
        plan = plan_stacks(Variant.parse(members[0].variant), cfg["batch_size"], list(by_seed), torch.device(device),
                           cfg["dataset"], cfg["model"]) if members[0].checkpoint is not None else [[c.seed] for c in members]
        groups += [[by_seed[seed] for seed in seeds] for seeds in plan]
    return groups


def train_cells(group: list[Cell], data: Splits, device: str, on_epoch=None, worker=0) -> list[CellResult]:
    """One cell with train_cell, or several seeds of one configuration as one stacked network
    (stacked.train_stack: the same numbers as one at a time, per-seed records and checkpoints)."""
    report = lambda cell: (lambda record, key=cell.key: on_epoch(key, record)) if on_epoch else None
    if len(group) == 1:
        return [train_cell(group[0], data, device, worker, report(group[0]))]
    import torch
    from .config import TrainConfig
    from .stacked import train_stack
    from .variants import Variant
    where = where_trained(device, worker)
    by_seed = {cell.seed: cell for cell in group}
    outcomes = train_stack(Variant.parse(group[0].variant), list(by_seed), TrainConfig(**group[0].cfg), data.train,
                           data.test, torch.device(device), [Path(c.checkpoint) for c in group],
                           on_epoch and (lambda record: report(by_seed[record["seed"]])({**record, **where})), val=data.val)
    return [cell_result(cell, outcome, where) for cell, outcome in zip(group, outcomes)]


# ---- local ----------------------------------------------------------------------------------

# A local worker process's own state, set once by _start_worker.
_WORKER: dict = {}


def quiet_worker(threads: int) -> None:
    """Settings of a process that trains cells for a driver."""
    import threading

    import torch
    from tqdm import tqdm
    from . import progress
    torch.set_num_threads(threads)
    progress.BARS = False              # several workers' live bars would overwrite each other
    # tqdm's default lock is a multiprocessing semaphore; a worker stopped by Ctrl-C could not
    # release it, and the resource tracker would warn about a leak. A thread lock is enough here.
    tqdm.set_lock(threading.RLock())


def die_with_parent(parent: int) -> None:
    """End this worker when the driver ends, even by kill -9: Linux signals it at once
    (PR_SET_PDEATHSIG); elsewhere a thread sees the parent change within a second."""
    import ctypes
    import signal
    import threading
    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)     # 1: PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(1)
        os._exit(1)
    threading.Thread(target=watch, daemon=True, name="normlab-parent-watch").start()


def shipped_norms(cells: list[Cell]) -> list:
    """The norms registered at run time in this process that the cells use, to send with them."""
    from .norms import shipped
    from .variants import Variant
    return shipped(Variant.parse(cell.variant).norm for cell in cells)


def _start_worker(indices, data: Splits, requested_device: str, threads: int,
                  parent: int, folder: str | None, shipped: list) -> None:
    import torch
    from .norms import install
    from .storage import hold_folder
    die_with_parent(parent)
    install(shipped)
    if folder is not None:
        hold_folder(folder)
    index = indices.get()
    quiet_worker(threads)
    gpus = torch.cuda.device_count() if requested_device != "cpu" else 0
    _WORKER.update(index=index, device=worker_device(index, requested_device, gpus), data=data.local())


def _worker_cells(group: list[Cell]) -> list[CellResult]:
    return train_cells(group, _WORKER["data"], _WORKER["device"], worker=_WORKER["index"])


@dataclass
class LocalExecutor:
    """Cells one after another in this process (workers=1), or in N worker processes."""
    workers: int = 1
    device: str = "auto"
    threads: int | None = None         # torch threads per cell; None: all cores, or cores/N with N workers
    stack: bool = True                 # seeds of one configuration as one network where that pays (stacked.py),
                                       # in this process or in each worker
    name: str = field(default="local", init=False)

    def threads_per_cell(self) -> int | None:
        return self.threads or (threads_per_worker(self.workers) if self.workers > 1 else None)

    def describe(self) -> dict:
        return {"executor": "local", "workers": self.workers, "threads_per_worker": self.threads_per_cell(),
                "stack": self.stack}

    def run_cells(self, cells: list[Cell], data: Splits, on_result: Callable[[CellResult], None],
                  folder: Path | None = None, on_epoch: Callable[[str, dict], None] | None = None) -> None:
        import torch
        from .train import resolve_device
        device = str(resolve_device(self.device))
        groups = stack_groups(cells, device) if self.stack else [[cell] for cell in cells]
        if self.workers == 1 or len(groups) <= 1:
            before = torch.get_num_threads()
            if self.threads:
                torch.set_num_threads(self.threads)
            try:
                for group in groups:
                    for result in train_cells(group, data, device, on_epoch):
                        on_result(result)
            finally:
                torch.set_num_threads(before)
            return
        # spawn, not fork: a forked child of a process that has started torch's thread pools
        # (or CUDA) can deadlock; spawn starts each worker clean.
        context = multiprocessing.get_context("spawn")
        workers = min(self.workers, len(groups))
        indices = context.Queue()
        for i in range(workers):
            indices.put(i)
        pool = ProcessPoolExecutor(max_workers=workers, mp_context=context, initializer=_start_worker,
                                   initargs=(indices, data.portable(),
                                             self.device, self.threads or threads_per_worker(workers),
                                             os.getpid(), None if folder is None else str(folder), shipped_norms(cells)))
        try:
            # Longest jobs first (most steps: small batches, several seeds stacked), so no worker
            # is left with one long job at the end while the others idle.
            longest = sorted(groups, key=lambda g: (g[0].cfg["epochs"] / g[0].cfg["batch_size"], len(g)), reverse=True)
            pending = {pool.submit(_worker_cells, group) for group in longest}
            while pending:
                done, pending = wait(pending, return_when=FIRST_COMPLETED)
                for future in done:
                    for result in future.result():     # a cell's error is raised here, in the driver
                        on_result(result)
        except BrokenProcessPool:
            # A worker was killed (kill -9, the out-of-memory killer): what it finished is saved.
            raise UserError("a local worker process died while training (killed, or out of memory)",
                            "rerun the same command with --resume: finished runs are kept and the others continue "
                            "from their last saved epoch") from None
        except BaseException:
            # Ctrl-C or a failed cell: stop the workers now rather than after their cells. A kill
            # mid-epoch loses that epoch only: checkpoints are replaced by rename, and --resume
            # clears the temporary files a kill leaves. (Python 3.11's pool has no public
            # terminate; its process table is the only handle on the workers.)
            for process in list((getattr(pool, "_processes", None) or {}).values()):
                process.terminate()
            raise
        finally:
            pool.shutdown(wait=True, cancel_futures=True)


# ---- Ray ------------------------------------------------------------------------------------

def import_ray():
    try:
        import ray
    except ImportError:
        raise UserError("--executor ray needs Ray, which is not installed",
                        "pip install 'normlab[ray]' (or use --executor local)") from None
    return ray


def _ray_cell(cell: Cell, data: Splits, device: str, threads: int, shipped: list) -> CellResult:
    import ray
    from .norms import install
    install(shipped)
    quiet_worker(threads)
    return train_cell(cell, data.local(), device, f"ray node {ray.get_runtime_context().get_node_id()[:8]}")


@dataclass
class RayExecutor:
    """Each cell a Ray task that asks for its CPUs and GPUs; Ray places, retries and reports."""
    address: str | None = None         # join this cluster ("auto": the one `ray start` runs here)
    cpus_per_cell: float = 1
    gpus_per_cell: float | None = None  # None: 1 when the cluster has GPUs and --device allows, else 0
    max_retries: int = 2
    device: str = "auto"
    name: str = field(default="ray", init=False)
    _resources: dict = field(default_factory=dict, init=False)

    def check(self) -> None:
        """Refuse bad options before anything is written."""
        import_ray()
        if self.cpus_per_cell <= 0:
            raise UserError(f"--cpus-per-cell {self.cpus_per_cell} must be positive", "pass e.g. --cpus-per-cell 1")
        if self.gpus_per_cell is not None and self.gpus_per_cell < 0:
            raise UserError(f"--gpus-per-cell {self.gpus_per_cell} must not be negative", "pass e.g. --gpus-per-cell 1")
        if self.max_retries < 0:
            raise UserError(f"--max-retries {self.max_retries} must not be negative", "pass e.g. --max-retries 2")
        if self.device.startswith("cuda") and self.gpus_per_cell == 0:
            raise UserError("--device cuda with --gpus-per-cell 0: Ray would give the cells no GPU",
                            "pass --gpus-per-cell 1 (or a fraction, e.g. 0.5 to share a GPU by two cells)")

    def describe(self) -> dict:
        return {"executor": "ray", "address": self.address, "cpus_per_cell": self.cpus_per_cell,
                "gpus_per_cell": self.gpus_per_cell, "max_retries": self.max_retries, **self._resources}

    def run_cells(self, cells: list[Cell], data: Splits, on_result: Callable[[CellResult], None],
                  folder: Path | None = None, on_epoch=None) -> None:
        ray = import_ray()
        started_here = not ray.is_initialized()
        if started_here:
            try:
                # A cluster of our own for this sweep: no dashboard (a web server we would not use).
                extra = {} if self.address else {"include_dashboard": False}
                ray.init(address=self.address, **extra)
            except (ConnectionError, RuntimeError, ValueError) as exc:
                raise UserError(f"cannot reach a Ray cluster at {self.address or 'a new local one'} "
                                f"({str(exc).splitlines()[0][:200]})",
                                "start one with `ray start --head`, check --ray-address, or drop it") from None
        pending: dict = {}
        try:
            cluster = ray.cluster_resources()
            self._resources = {"cluster_cpus": cluster.get("CPU", 0), "cluster_gpus": cluster.get("GPU", 0)}
            gpus = self.gpus_per_cell
            if gpus is None:
                gpus = 1 if cluster.get("GPU", 0) > 0 and self.device != "cpu" else 0
            if self.device.startswith("cuda") and cluster.get("GPU", 0) == 0:
                raise UserError("--device cuda, but the Ray cluster has no GPUs", "use --device auto or cpu")
            self.gpus_per_cell = gpus
            # Ray sets CUDA_VISIBLE_DEVICES to the task's GPUs, so "cuda" is the GPU it was given.
            device = "cuda" if gpus > 0 else "cpu"
            task = ray.remote(num_cpus=self.cpus_per_cell, num_gpus=gpus, max_retries=self.max_retries)(_ray_cell)
            data_ref = ray.put(data.portable())
            threads, shipped = max(1, int(self.cpus_per_cell)), shipped_norms(cells)
            pending = {task.remote(cell, data_ref, device, threads, shipped): cell for cell in cells}
            while pending:
                done, _ = ray.wait(list(pending), num_returns=1)
                cell = pending.pop(done[0])
                try:
                    result = ray.get(done[0])
                except ray.exceptions.RayTaskError as exc:
                    cause = getattr(exc, "cause", None)
                    if isinstance(cause, UserError):
                        raise UserError(f"cell {cell.label}: {cause.what}", cause.fix) from None
                    raise
                on_result(result)
        finally:
            for ref in pending:
                ray.cancel(ref, force=True)
            if started_here:
                ray.shutdown()


def make_executor(name: str, workers: int = 1, device: str = "auto", address: str | None = None,
                  cpus_per_cell: float | None = None, gpus_per_cell: float | None = None, max_retries: int | None = None,
                  threads: int | None = None, stack: str = "auto"):
    """The executor named; Ray's options (None: their defaults, 1 CPU and 2 retries) only with ray."""
    if name not in EXECUTORS:
        raise UserError(f"unknown executor {name!r}", f"choose one of {', '.join(EXECUTORS)}")
    if workers < 1:
        raise UserError(f"--workers {workers} must be at least 1", "pass e.g. --workers 2")
    if threads is not None and threads < 1:
        raise UserError(f"--threads {threads} must be at least 1", "pass e.g. --threads 1")
    if name == "local":
        ray_only = {"--ray-address": address, "--cpus-per-cell": cpus_per_cell, "--gpus-per-cell": gpus_per_cell,
                    "--max-retries": max_retries}
        for flag, value in ray_only.items():
            if value is not None:
                raise UserError(f"{flag} is for --executor ray", f"add --executor ray, or drop {flag}")
        if stack not in ("auto", "off"):
            raise UserError(f"unknown --stack {stack!r}", "choose auto or off")
        return LocalExecutor(workers, device, threads, stack == "auto")
    if workers != 1:
        raise UserError("--workers is for --executor local; Ray runs as many cells at once as the cluster has room for",
                        "drop --workers (use --cpus-per-cell to size each cell)")
    if threads is not None:
        raise UserError("--threads is for --executor local", "use --cpus-per-cell: a Ray cell runs that many threads")
    executor = RayExecutor(address, 1 if cpus_per_cell is None else cpus_per_cell, gpus_per_cell,
                           2 if max_retries is None else max_retries, device)
    executor.check()
    return executor
