"""Data-parallel training over MPI: the only module that imports mpi4py (as backend.py is of CuPy).

    mpiexec -n 2 python -m mpi4py -m minigpt.train shakespeare.txt --batch-size 6

Every rank holds the whole model. Each step, all ranks draw the same global
batch of N*B rows from the same random stream and rank r keeps rows
r*B .. (r+1)*B (`shard`); each computes the gradient of its mean loss, and one
in-place Allreduce over one flat buffer sums them (`average`). Divided by N,
that is the gradient of the mean loss over the whole batch, so every rank
takes the same AdamW step and the weights stay bit-identical. Rank 0 writes
the log and all files; the others stay quiet.

One process is the special case where every collective is the identity:
`world()` returns a `Solo` unless an MPI launcher started this process with
more than one rank, so training without mpiexec runs exactly as it always did
(and mpi4py is never imported).
"""
import io
import os
import pickle
import sys
import time
import traceback
import zlib

import numpy as np

from .backend import array_module, host_threads, select_gpu, to_numpy

# what launchers put in each rank's environment: MPICH's Hydra, Open MPI, PMIx (Slurm's srun --mpi)
SIZE_VARS = ("PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "PMIX_SIZE")
RANK_VARS = ("PMI_RANK", "OMPI_COMM_WORLD_RANK", "PMIX_RANK")
LAUNCHER_VARS = SIZE_VARS + RANK_VARS + ("MPI_LOCALRANKID", "OMPI_COMM_WORLD_LOCAL_RANK")
EXIT_WAIT_S = 10.0       # how long a failing rank waits for the others before it ends the job


class DistError(RuntimeError):
    """Data-parallel training cannot start (e.g. mpiexec without mpi4py)."""


class RanksDiverged(RuntimeError):
    """The weights differed between ranks at a save (rank 0's were saved)."""


def launched_by_mpi(environ=None):
    """True when an MPI launcher (mpiexec, mpirun, srun) started this process."""
    environ = os.environ if environ is None else environ
    return any(v in environ for v in LAUNCHER_VARS)


def launcher_rank(environ=None):
    """This process's rank as the launcher's environment says (0 if it says nothing)."""
    environ = os.environ if environ is None else environ
    return next((int(environ[v]) for v in RANK_VARS if environ.get(v, "").isdigit()), 0)


class Solo:
    """One process: every collective is the identity, so training is exactly single-process."""
    rank, size, local_rank, local_size, is_root = 0, 1, 0, 1, True

    def describe(self):
        """How the job is laid out, for the log ('' for one process)."""
        return ""

    def shard(self, x, y):
        """This rank's rows of a global batch: all of them."""
        return x, y

    def average(self, grads, loss):
        """Mean of grads (in place) and of the loss over ranks; returns the loss."""
        return loss

    def mean(self, value):
        """The mean of a number over ranks."""
        return value

    def from_root(self, value):
        """Rank 0's value, on every rank (rank 0 decides)."""
        return value

    def decide(self, fn):
        """fn() on rank 0, its result (or its exception) on every rank: the one way a decision
        that depends on a rank's own timings (the time budget's plan, refits and stop) is made."""
        return fn()

    def any(self, flag):
        """True on every rank if flag is true on any rank."""
        return flag

    def check_same_flags(self, flags):
        """DistError unless flags ({name: (value, given on the command line)}) agree on all ranks."""

    def agree(self, fn):
        """fn(); under MPI every rank raises if fn raised on any rank."""
        return fn()

    def root_first(self, fn):
        """fn() on rank 0, then on the others (they read what rank 0 wrote)."""
        return fn()

    def same_everywhere(self, value):
        """True if value is equal on all ranks."""
        return True

    def weights_agree(self, params):
        """True if the weights are bit-identical on all ranks."""
        return True

    def check_in_sync(self, params):
        """RuntimeError unless the weights are bit-identical on all ranks."""

    def check_same_data(self, tokenizer, text_sha256):
        """DistError unless all ranks hold the same tokenizer and training data (its SHA-256)."""

    def barrier(self):
        """Wait until every rank is here."""

    def seed(self, seed):
        """A seed of this rank's own (rank 0: seed itself), for dropout masks."""
        return seed

    def use_gpu(self):
        """Pick this rank's GPU before any array is made; returns its index or None."""
        return None

    def run(self, main):
        """main() -> exit status."""
        return main()


class MPIWorld(Solo):
    """N ranks of MPI.COMM_WORLD, one model replica each."""

    def __init__(self, MPI):
        self.MPI, self.comm = MPI, MPI.COMM_WORLD
        self.rank, self.size = self.comm.Get_rank(), self.comm.Get_size()
        self.is_root = self.rank == 0
        node = self.comm.Split_type(MPI.COMM_TYPE_SHARED)      # the ranks on this machine
        self.local_rank, self.local_size = node.Get_rank(), node.Get_size()
        node.Free()
        self._exit_comm = self.comm.Dup()      # for the exit handshake: never mixes with training's
        self._flat = None                      # (buffer, {name: view}) for the gradients
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
        wanted = os.environ.get("OPENBLAS_NUM_THREADS", "")
        host_threads(int(wanted) if wanted.isdigit() and int(wanted) > 0 else max(1, cores // self.local_size))

    def describe(self):
        n = host_threads()
        return (f" (data parallel: {self.size} ranks, {self.local_size} on this machine, "
                f"{n} thread{'s' * (n > 1)} each)")

    def shard(self, x, y):
        n = len(x) // self.size
        rows = slice(self.rank * n, (self.rank + 1) * n)
        return x[rows], y[rows]

    def _buffer(self, grads):
        """One flat array (on the gradients' device) with a view per gradient, and a slot for the loss."""
        if self._flat is None:
            first = next(iter(grads.values()))
            flat = array_module(first).empty(sum(g.size for g in grads.values()) + 1, dtype=first.dtype)
            views, start = {}, 0
            for k, g in grads.items():
                views[k] = flat[start:start + g.size].reshape(g.shape)
                start += g.size
            self._flat = flat, views
        return self._flat

    def average(self, grads, loss):
        """One Allreduce: grads[k] become views of the summed buffer times 1/N; returns the mean loss.

        On a GPU the buffer goes through the host: one copy out, the Allreduce, one copy in."""
        flat, views = self._buffer(grads)
        for k, g in grads.items():
            views[k][...] = g                  # copy in (backward made fresh arrays)
        flat[-1] = loss
        host = to_numpy(flat)                  # flat itself on the CPU
        self.comm.Allreduce(self.MPI.IN_PLACE, host, op=self.MPI.SUM)
        host *= 1.0 / self.size                # sum -> mean (a Python float keeps float32)
        if host is not flat:
            flat[...] = array_module(flat).asarray(host)
        for k in grads:
            grads[k] = views[k]                # no copy out: the views are the gradients
        return flat[-1].copy()

    def mean(self, value):
        buf = np.array([float(value)])
        self.comm.Allreduce(self.MPI.IN_PLACE, buf, op=self.MPI.SUM)
        return float(buf[0]) / self.size

    def from_root(self, value):
        return self.comm.bcast(value, root=0)

    def decide(self, fn):
        value, error = None, None
        if self.is_root:
            try:
                value = fn()
            except Exception as e:             # every rank raises rank 0's error
                error = e
        value, shared = self.comm.bcast((value, None if error is None else _portable(error, 0)), root=0)
        if shared is not None:
            raise error if error is not None else shared
        return value

    def check_same_flags(self, flags):
        every = self.comm.allgather(flags)
        for name in sorted(set().union(*every)):
            values = [f.get(name, (None, False)) for f in every]
            shown = [repr(v) for v, _ in values]
            odd = [r for r, v in enumerate(shown) if v != shown[0]]
            how = [f"{shown[0]} on rank 0 but {shown[odd[0]] if odd else ''}"]
            if not odd:                        # the same value, given on some ranks only (--resume)
                odd = [r for r, (_, given) in enumerate(values) if given != values[0][1]]
                how = ["given on rank 0 but not" if values[0][1] else "not given on rank 0 but given"]
            if odd:
                flag = "--" + name.replace("_", "-")
                raise DistError(f"the ranks were given different flags: {flag} is {how[0]} on "
                                f"rank{'s' * (len(odd) > 1)} {', '.join(map(str, odd))}: give every rank "
                                f"the same command line")

    def any(self, flag):
        buf = np.array([1 if flag else 0], dtype=np.int32)
        self.comm.Allreduce(self.MPI.IN_PLACE, buf, op=self.MPI.MAX)
        return bool(buf[0])

    def agree(self, fn):
        """fn() on every rank. If it raised on any rank, every rank raises the error of the
        lowest such rank (rank 0 prints it), instead of the others waiting forever."""
        try:
            result, error = fn(), None
        except Exception as e:
            if getattr(e, "agreed", False):    # already agreed by an inner agree()
                raise
            result, error = None, e
        errors = self.comm.allgather(None if error is None else _portable(error, self.rank))
        failed = [(r, e) for r, e in enumerate(errors) if e is not None]
        if not failed:
            return result
        rank, e = failed[0]
        if rank == self.rank:
            e = error                          # our own, with its traceback
        e.agreed = True
        raise e

    def root_first(self, fn):
        if self.is_root:
            return self.agree(fn)
        self.agree(lambda: None)               # wait for rank 0 (and stop if it failed)
        return fn()

    def same_everywhere(self, value):
        values = self.comm.allgather(value)
        return all(v == values[0] for v in values)

    def weights_agree(self, params):
        crc = 0
        for p in params.values():
            crc = zlib.crc32(np.ascontiguousarray(to_numpy(p)), crc)
        return self.same_everywhere(crc)

    def check_in_sync(self, params):
        if not self.weights_agree(params):
            raise RuntimeError("the weights differ between ranks: a bug in minigpt's data-parallel "
                               "step (every rank must take the same optimizer step)")

    def check_same_data(self, tokenizer, text_sha256):
        crc = zlib.crc32(text_sha256.encode("ascii"), zlib.crc32(tokenizer.to_json().encode("utf-8")))
        if not self.same_everywhere(crc):
            raise DistError("the ranks read different texts or tokenizers: give every machine the same "
                            "FILE, and an --out-dir on a filesystem they share")

    def barrier(self):
        self.comm.Barrier()

    def seed(self, seed):
        return seed + (self.rank << 32)

    def use_gpu(self):
        return select_gpu(self.local_rank)

    def run(self, main):
        """main() with rank 0 alone printing; the job ends together, or at once if a rank crashes.

        The other ranks' output is dropped, but their stderr is kept and shown if that
        rank fails alone (then it is the only one that knows why)."""
        saved, held = (sys.stdout, sys.stderr), io.StringIO()
        if not self.is_root:
            sys.stdout, sys.stderr = open(os.devnull, "w"), held
        try:
            status = main()
        except BaseException:                  # a crash: print it and end every rank now
            sys.stdout, sys.stderr = saved
            sys.stdout.flush()
            report = (held.getvalue() + traceback.format_exc()).encode("utf-8", "replace")
            os.write(2, report)                # one write, so the launcher forwards it whole
            time.sleep(0.2)                    # and has a moment to, before the abort
            self.comm.Abort(1)
            os._exit(1)                        # in case the abort returns
        finally:
            sys.stdout, sys.stderr = saved
        return self.finish(status, held.getvalue())

    def finish(self, status, held=""):
        """Wait for every rank to end, then leave MPI and return status. A rank that fails
        alone (the others are stuck in a collective) ends the whole job after EXIT_WAIT_S."""
        request = self._exit_comm.Ibarrier()
        deadline = time.monotonic() + EXIT_WAIT_S
        while not request.Test():
            if status and time.monotonic() > deadline:     # status 0: all ranks finished the loop
                sys.stderr.write(held)
                sys.stdout.flush()
                sys.stderr.flush()
                os._exit(status)               # the launcher then stops the other ranks
            time.sleep(0.005)
        self.MPI.Finalize()
        return status


def _portable(error, rank):
    """The exception, or a RuntimeError with its message if it cannot be pickled; named by rank."""
    message = f"{error} (on rank {rank})" if rank else str(error)
    try:
        copy = type(error)(message)
        pickle.loads(pickle.dumps(copy))
        return copy
    except Exception:
        return RuntimeError(f"{type(error).__name__}: {message}")


_world = None


def world(environ=None):
    """This process's place in the job: an MPIWorld under a launcher with 2+ ranks, else Solo().

    Raises DistError if a launcher started 2+ ranks but mpi4py is not installed."""
    global _world
    if _world is None:
        environ = os.environ if environ is None else environ
        if not launched_by_mpi(environ):
            _world = Solo()
            return _world
        try:
            from mpi4py import MPI
        except ImportError:
            size = next((int(environ[v]) for v in SIZE_VARS if environ.get(v, "").isdigit()), 1)
            if size > 1:
                raise DistError(f"started by an MPI launcher with {size} processes, but mpi4py is not "
                                f"installed: pip install -r requirements-mpi.txt") from None
            _world = Solo()
            return _world
        _world = MPIWorld(MPI) if MPI.COMM_WORLD.Get_size() > 1 else Solo()
    return _world


def run(main):
    """Run main() -> exit status as one rank of the job (or as the one process)."""
    try:
        w = world()
    except DistError as e:
        if launcher_rank() == 0:
            print(f"error: {e}", file=sys.stderr)
        return 2
    return w.run(main)
