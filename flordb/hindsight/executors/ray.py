"""Replay tasks on a Ray cluster (``pip install 'flordb[ray]'``), DESIGN decision 7.

A task is self-contained: the patched source tree of its version (a tar
archive, put into Ray's object store once per version), the checkpoint blobs
it restores and its spec travel to the worker; the worker runs the script in
a temporary directory of its node, with its own store, and sends back the
files the replay wrote. The driver writes them as segments of this project's
store, where ingest picks them up like any run. No shared filesystem is
needed. Resources map to Ray's: ``num_cpus`` = the run's threads, ``memory``
= its peak RSS, ``num_gpus`` = its GPUs.
"""

from __future__ import annotations

import io
import json
import os
import tarfile
import time
from pathlib import Path

from flordb.errors import HindsightError
from flordb.hindsight.executors.base import Executor
from flordb.hindsight.executors.local import thread_env
from flordb.hindsight.executors.scheduler import Resources
from flordb.store.layout import Layout
from flordb.store.segments import write_json_atomic

LINKED_INPUT_LIMIT = 256 << 20  # git-ignored inputs bigger than this do not travel (say so)
SKIP_INPUTS = {".venv", "venv", "env", "node_modules", "__pycache__", ".tox", "build", "dist"}


def _ray():
    try:
        import ray
    except ImportError:
        raise HindsightError("the Ray executor needs Ray: pip install 'flordb[ray]'") from None
    return ray


class RayExecutor(Executor):
    """Tasks as Ray tasks on the cluster at ``address`` (``auto``, ``HOST:PORT``; default: RAY_ADDRESS, else a local Ray)."""

    name = "ray"
    where = "cluster CPUs"

    def __init__(self, layout: Layout, git_dirs: dict[str, str], workers: int | None = None,
                 progress: bool = True, address: str | None = None):
        super().__init__(workers, progress)
        self.layout = layout
        self.git_dirs = git_dirs
        self.address = address or os.environ.get("RAY_ADDRESS") or None
        self.trees: dict[str, object] = {}  # version -> ObjectRef of its archive
        self.remote = None
        self.node_memory = 0
        self.node_cpus = 1

    def connect(self):
        ray = _ray()
        if not ray.is_initialized():
            try:
                ray.init(address=self.address, ignore_reinit_error=True, log_to_driver=False,
                         logging_level="ERROR", configure_logging=True)
            except Exception as exc:
                where = self.address or "a new local Ray instance"
                raise HindsightError(f"cannot connect to Ray at {where}: {str(exc).splitlines()[0]}") from None
        if self.remote is None:
            self.remote = ray.remote(max_retries=0)(run_task)  # retries happen once, in Executor.run
        return ray

    def capacity(self) -> Resources:
        ray = self.connect()
        total = ray.cluster_resources()
        nodes = [n.get("Resources", {}) for n in ray.nodes() if n.get("Alive")]
        self.node_memory = max((n.get("memory", 0) for n in nodes), default=0)
        self.node_cpus = max((n.get("CPU", 0) for n in nodes), default=1)
        return Resources(cpus=total.get("CPU", 1), memory=int(total.get("memory", 0)), gpus=total.get("GPU", 0))

    def tree(self, version: str):
        if version not in self.trees:
            from flordb.hindsight.executor import source_dir

            src = source_dir(self.layout, self.git_dirs[version], version)
            self.trees[version] = self.connect().put(pack_tree(src, self.layout.work_tree))
        return self.trees[version]

    def start(self, task, attempt: int):
        from flordb.store.objects import ObjectStore

        ray = self.connect()
        store = ObjectStore(self.layout.objects)
        blobs = {d: store.get(d) for c in task.checkpoints.values() for _, d in c.values()}
        # A task bigger than every node would never be placed: it asks for a whole node instead.
        opts = {"num_cpus": min(max(1, task.threads or 1), self.node_cpus or 1)}
        if task.memory and self.node_memory and task.memory <= self.node_memory:
            opts["memory"] = int(task.memory)  # else it could never be placed: run it anyway
        if getattr(task, "gpus", 0):
            opts["num_gpus"] = task.gpus
        spec = task.payload()
        ref = self.remote.options(**opts).remote(json.dumps(spec, default=str), self.tree(task.version),
                                                 ray.put(blobs))
        return _Handle(ref, task, time.perf_counter())

    def wait(self, handles: list, timeout: float) -> list:
        ray = self.connect()
        by_ref = {h.ref: h for h in handles}
        ready, _ = ray.wait(list(by_ref), num_returns=len(by_ref), timeout=timeout)
        out = []
        for ref in ready:
            h = by_ref[ref]
            log = self.layout.replays / h.task.replay_id / f"{h.task.task_id}.log"
            log.parent.mkdir(parents=True, exist_ok=True)
            try:
                res = ray.get(ref)
            except Exception as exc:  # the Ray worker died, or the node went away
                with open(log, "a") as fh:
                    fh.write(f"ray task failed: {type(exc).__name__}: {str(exc).splitlines()[0]}\n")
                out.append((h, -1, time.perf_counter() - h.t0, log))
                continue
            with open(log, "a") as fh:
                fh.write(f"[ray node {res.get('node', '?')}, in {res.get('dir', '?')}]\n{res['log']}")
            if res["returncode"] == 0:
                self.write_files(res["files"])
            out.append((h, res["returncode"], time.perf_counter() - h.t0, log))
        return out

    def write_files(self, files: dict[str, bytes]) -> None:
        """The worker's run directory, into this store: segments first, run.json, then end.json."""
        def order(rel: str) -> int:
            return {"run.json": 1, "end.json": 2}.get(rel.rsplit("/", 1)[-1], 0)

        for rel in sorted(files, key=order):
            run_id, _, name = rel.partition("/")
            if "/" in name or run_id in ("", ".", "..") or name in ("", ".", ".."):
                continue  # only plain files of one run directory
            dest = self.layout.segments / run_id / name
            dest.parent.mkdir(parents=True, exist_ok=True)
            if name.endswith(".json"):
                write_json_atomic(dest, json.loads(files[rel]))
            else:
                tmp = dest.with_name(f".{name}.tmp")
                tmp.write_bytes(files[rel])
                os.replace(tmp, dest)

    def cancel(self, handles: list) -> None:
        ray = self.connect()
        for h in handles:
            try:
                ray.cancel(h.ref, force=True)
            except Exception:
                pass


class _Handle:
    __slots__ = ("ref", "task", "t0")

    def __init__(self, ref, task, t0):
        self.ref, self.task, self.t0 = ref, task, t0


def pack_tree(src: Path, work_tree: Path) -> bytes:
    """The task's tree as a tar archive that needs nothing from this machine.

    The replay tree holds the version's files and copies of the project's
    git-ignored inputs; inputs too big to copy are links into the project.
    Links into the project are packed as the files they point to (up to
    :data:`LINKED_INPUT_LIMIT` each), except tool directories (``.venv``);
    other links stay links.
    """
    buf = io.BytesIO()
    work_tree = work_tree.resolve()
    with tarfile.open(fileobj=buf, mode="w:gz", compresslevel=1) as tar:
        for root, dirs, files in os.walk(src):
            for name in sorted(dirs + files):
                path = Path(root) / name
                arc = str(path.relative_to(src))
                if path.is_symlink():
                    target = path.resolve()
                    if not target.is_relative_to(work_tree):
                        tar.add(str(path), arcname=arc, recursive=False)
                    elif name not in SKIP_INPUTS and _size(target) <= LINKED_INPUT_LIMIT:
                        tar.dereference = True
                        tar.add(str(path), arcname=arc)
                        tar.dereference = False
                elif name in files:
                    tar.add(str(path), arcname=arc, recursive=False)
                else:
                    tar.add(str(path), arcname=arc, recursive=False)  # the directory entry; os.walk goes in
    return buf.getvalue()


def _size(path: Path) -> int:
    path = path.resolve()
    if path.is_file():
        return path.stat().st_size
    total = 0
    for root, _, files in os.walk(path):
        for f in files:
            try:
                total += os.path.getsize(os.path.join(root, f))
            except OSError:
                pass
            if total > LINKED_INPUT_LIMIT:
                return total
    return total


def run_task(spec_json: str, tree: bytes, blobs: dict[str, bytes]) -> dict:
    """On a Ray worker: unpack the version and the blobs into a temporary directory, replay, send back."""
    import socket
    import subprocess
    import sys
    import tempfile

    from flordb.store.objects import ObjectStore

    spec = json.loads(spec_json)
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="flordb-task-") as tmp:
        root = Path(tmp)
        src, home = root / "src", root / "home"
        with tarfile.open(fileobj=io.BytesIO(tree), mode="r:gz") as tar:
            if hasattr(tarfile, "tar_filter"):
                tar.extractall(src, filter="tar")
            else:  # Python < 3.11.4: the archive is ours
                tar.extractall(src)
        store = ObjectStore(home / "objects", fsync=False)
        for data in blobs.values():
            store.put(data)
        task_file = root / "task.json"
        task_file.write_text(spec_json)
        env = {**os.environ, "FLORDB_REPLAY_TASK": str(task_file), "FLORDB_HOME": str(home),
               "FLORDB_PROGRESS": "0", "PYTHONUNBUFFERED": "1", **thread_env(spec.get("threads") or 1)}
        env.pop("FLORDB_DISABLE", None)
        cwd = src / spec["cwd"] if spec.get("cwd") not in (None, "", ".") else src
        proc = subprocess.run([sys.executable, str(src / spec["script"]), *spec["argv"]], cwd=cwd, env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        files: dict[str, bytes] = {}
        segments = home / "segments"
        if segments.is_dir():
            for run_dir in segments.iterdir():
                for f in run_dir.iterdir():
                    if f.is_file() and not f.name.startswith("."):
                        files[f"{run_dir.name}/{f.name}"] = f.read_bytes()
    return {"returncode": proc.returncode, "log": proc.stdout.decode(errors="replace")[-100_000:],
            "files": files, "seconds": time.perf_counter() - t0, "dir": tmp, "node": _node_id(socket.gethostname())}


def _node_id(default: str) -> str:
    try:
        import ray

        return ray.get_runtime_context().get_node_id()[:12]
    except Exception:
        return default
