"""Synchronous data-parallel training over MPI: one model per process ("rank").

Every rank holds the whole model.  In one optimizer step each of the N ranks
computes the loss and gradient on its own 1/N of the global batch; the ranks
then *average* their gradients, so every rank takes the very same optimizer
step with the gradient of the whole batch::

    mean-loss gradient of B examples = (1/N) * sum over ranks r of
                                       (mean-loss gradient of rank r's B/N examples)

(the shards are equal in size, so the mean of the shard means is the mean).
Because the parameters start identical (broadcast from rank 0) and every rank
applies the identical averaged gradient, they stay identical; :meth:`Comm.check_identical`
asserts it cheaply with a CRC of the parameter bytes.

The average is one ``MPI_Allreduce`` (sum, then divide by N) per *bucket*:
the gradients of all parameters are packed into a few large flat buffers
(``bucket_bytes`` each, default 4 MiB), not reduced tensor by tensor - one
call per tensor would pay MPI's per-message latency hundreds of times a step.

Cost model (a ring all-reduce, what MPICH uses for large messages): every rank
sends and receives ``2 (N - 1) / N x S`` bytes for ``S`` bytes of gradients, so
the time is about ``2 (N - 1) / N x S / bandwidth`` (+ latency per bucket),
independent of the batch size; the compute per step shrinks as 1/N.  See
docs/distributed.md, lessons/08_2_data_parallel.py, and
:mod:`tinylm.training.dp_timing` to measure it.

mpi4py is optional (``pip install "tinylm[mpi]"``); this module imports it only
when :func:`world` is called.  Nothing here runs when training on one process.
"""

import os
import sys
import time
import traceback
import zlib

import numpy as np

__all__ = ["Comm", "world", "mpi_available", "launched_by_mpi", "default_threads",
           "shard_rows", "install_abort_on_error", "abort_with_message",
           "abort_with_traceback", "DEFAULT_BUCKET_BYTES"]

DEFAULT_BUCKET_BYTES = 4 << 20


def mpi_available():
    """True when mpi4py (and an MPI library it can load) is importable."""
    try:
        from mpi4py import MPI  # noqa: F401
    except Exception:
        return False
    return True


def launched_by_mpi():
    """True when this process was started by mpiexec/mpirun with more than one rank."""
    for var in ("PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "PMIX_SIZE", "MPI_LOCALNRANKS"):
        v = os.environ.get(var)
        if v and v.isdigit() and int(v) > 1:
            return True
    return False


def world(bucket_bytes=DEFAULT_BUCKET_BYTES):
    """A :class:`Comm` over MPI_COMM_WORLD (imports mpi4py; clear error without it)."""
    try:
        from mpi4py import MPI
    except ImportError as exc:
        raise RuntimeError("data-parallel training needs mpi4py and an MPI library: "
                           "pip install \"tinylm[mpi]\" (%s)" % exc) from None
    return Comm(MPI.COMM_WORLD, bucket_bytes=bucket_bytes)


def shard_rows(batch_size, parts, index):
    """The rows ``slice`` of a global batch that part ``index`` of ``parts`` gets.

    The rule: the global batch is split into ``parts`` equal, contiguous shards
    (rank r, micro-batch k -> part r * K + k).  A batch that does not divide
    is refused: unequal shards would make the mean of the shard means differ
    from the batch mean, i.e. silently change the mathematics.
    """
    if parts < 1 or batch_size % parts:
        raise ValueError("the batch size %d does not split into %d equal parts (ranks x "
                         "gradient-accumulation micro-batches); use a multiple of %d"
                         % (batch_size, parts, parts))
    n = batch_size // parts
    return slice(index * n, (index + 1) * n)


def default_threads(comm):
    """C-kernel threads for this rank: the cores it may use / ranks sharing them.

    TINYLM_NUM_THREADS, when set, wins.  If the launcher bound the rank to a
    set of cores (mpiexec -bind-to ...), that set is this rank's; otherwise
    the node's cores are shared among the ranks on this node (so 2 ranks on a
    2-core machine get 1 thread each and do not oversubscribe).
    """
    if os.environ.get("TINYLM_NUM_THREADS", "").strip():
        from tinylm import kernels
        return kernels.get_num_threads()
    try:
        mine = len(os.sched_getaffinity(0))
    except AttributeError:              # no sched_getaffinity (macOS)
        mine = os.cpu_count() or 1
    total = os.cpu_count() or mine
    if mine < total:                    # bound by the launcher: these cores are ours
        return max(1, mine)
    return max(1, mine // comm.local_size)


class Comm:
    """The handful of collectives data-parallel training needs, on an mpi4py communicator.

    rank, size: this process's index and the number of processes.
    seconds, bytes: time spent in (and gradient bytes sent through) the
    gradient all-reduce so far, for the "all-reduce share" of a step.
    """

    def __init__(self, mpi_comm, bucket_bytes=DEFAULT_BUCKET_BYTES):
        from mpi4py import MPI
        self._MPI = MPI
        self.mpi = mpi_comm
        self.rank = mpi_comm.Get_rank()
        self.size = mpi_comm.Get_size()
        self.bucket_bytes = int(bucket_bytes)
        if self.bucket_bytes < 1024:
            raise ValueError("bucket_bytes must be >= 1024, got %d" % self.bucket_bytes)
        local = mpi_comm.Split_type(MPI.COMM_TYPE_SHARED, key=self.rank)
        self.local_size = local.Get_size()
        local.Free()
        self.seconds = 0.0
        self.bytes = 0
        self.calls = 0
        self._plan = None

    @property
    def is_root(self):
        return self.rank == 0

    def __repr__(self):
        return "Comm(rank %d of %d)" % (self.rank, self.size)

    # -- buckets -----------------------------------------------------------
    def _buckets(self, arrays):
        """Pack plan: per dtype, the arrays' flat views cut into <= bucket_bytes buffers.

        Returns [(buffer, [(flat_view_slice, buffer_slice), ...]), ...]; built
        once per list of arrays (the gradients never move: the layer contract
        accumulates into the same arrays).
        """
        key = tuple(id(a) for a in arrays)
        if self._plan is not None and self._plan[0] == key:
            return self._plan[1]
        by_dtype = {}
        for a in arrays:
            if not a.flags.c_contiguous:
                raise ValueError("data-parallel training needs C-contiguous gradients; "
                                 "got one of shape %s that is not" % (a.shape,))
            by_dtype.setdefault(a.dtype, []).append(a.reshape(-1))
        plan = []
        for dtype, flats in by_dtype.items():
            per = max(1, self.bucket_bytes // dtype.itemsize)
            total = sum(f.size for f in flats)
            sizes = [min(per, total - s) for s in range(0, total, per)]
            bufs = [np.empty(n, dtype) for n in sizes]
            pieces = [[] for _ in bufs]
            b, used = 0, 0                 # current bucket, elements used in it
            for f in flats:
                start = 0
                while start < f.size:
                    n = min(f.size - start, sizes[b] - used)
                    pieces[b].append((f[start:start + n], slice(used, used + n)))
                    start += n
                    used += n
                    if used == sizes[b] and b + 1 < len(bufs):
                        b, used = b + 1, 0
            plan += list(zip(bufs, pieces))
        self._plan = (key, plan)
        return plan

    def num_buckets(self, arrays):
        return len(self._buckets(list(arrays)))

    # -- the collectives training uses --------------------------------------
    def average_(self, arrays, scale=1.0):
        """In place: every array becomes the mean over ranks of ``scale x array``.

        Bucketed: each bucket is packed, its Iallreduce (sum) started at once
        (so reducing one overlaps packing the next), and after they all finish
        each array is unpacked multiplied by ``scale / size``.
        """
        arrays = list(arrays)
        MPI = self._MPI
        t0 = time.perf_counter()
        plan = self._buckets(arrays)
        reqs = []
        for buf, pieces in plan:
            for view, sl in pieces:
                buf[sl] = view
            reqs.append(self.mpi.Iallreduce(MPI.IN_PLACE, buf, op=MPI.SUM))
        MPI.Request.Waitall(reqs)
        f = scale / self.size
        for buf, pieces in plan:
            for view, sl in pieces:
                np.multiply(buf[sl], f, out=view)
        self.seconds += time.perf_counter() - t0
        self.bytes += sum(buf.nbytes for buf, _ in plan)
        self.calls += 1

    def mean(self, values):
        """Mean over ranks of a few float64 numbers (e.g. the shard losses)."""
        x = np.asarray(values, dtype=np.float64).reshape(-1).copy()
        self.mpi.Allreduce(self._MPI.IN_PLACE, x, op=self._MPI.SUM)
        return x / self.size

    def broadcast_(self, arrays, root=0):
        """In place: every array takes rank ``root``'s values (bucketed Bcast)."""
        arrays = list(arrays)
        plan = self._buckets(arrays)
        for buf, pieces in plan:
            if self.rank == root:
                for view, sl in pieces:
                    buf[sl] = view
            self.mpi.Bcast(buf, root=root)
            if self.rank != root:
                for view, sl in pieces:
                    view[...] = buf[sl]

    def bcast(self, obj, root=0):
        """A small Python object from ``root`` to everyone (progress decisions, meta)."""
        return self.mpi.bcast(obj, root=root)

    def gather(self, obj, root=0):
        return self.mpi.gather(obj, root=root)

    def barrier(self):
        self.mpi.Barrier()

    def check_identical(self, arrays, what="parameters"):
        """Raise on every rank if ``arrays`` differ anywhere between ranks.

        Cheap: one CRC-32 of the bytes per rank (about 1 GB/s), gathered as
        one integer each.
        """
        crc = 0
        for a in arrays:
            crc = zlib.crc32(memoryview(np.ascontiguousarray(a)).cast("B"), crc)
        crcs = self.mpi.allgather(crc)
        if len(set(crcs)) != 1:
            odd = [r for r, c in enumerate(crcs) if c != crcs[0]]
            raise RuntimeError("data-parallel %s differ between ranks: rank(s) %s differ "
                               "from rank 0 (CRC-32 %s)" % (what, odd, crcs))
        return crcs[0]

    def abort(self, code=1):
        """End every rank of the job now (MPI_Abort)."""
        sys.stdout.flush()
        sys.stderr.flush()
        self.mpi.Abort(code)


def abort_with_message(comm, exc, code=1, prefix="tinylm"):
    """Print ``exc`` (one line, naming the rank) and abort the whole job."""
    print("%s: rank %d of %d: error: %s" % (prefix, comm.rank, comm.size, exc),
          file=sys.stderr, flush=True)
    comm.abort(code)


def abort_with_traceback(comm, exc_info=None):
    """Print the exception being handled (with the rank's number) and abort the whole job."""
    kind, value, tb = exc_info or sys.exc_info()
    text = "".join(traceback.format_exception(kind, value, tb))
    sys.stderr.write("tinylm: rank %d of %d failed:\n%s" % (comm.rank, comm.size, text))
    comm.abort(1)


def install_abort_on_error(comm):
    """An exception nobody catches on any rank ends the whole job at once.

    Without this, a rank that dies leaves the others waiting forever in their
    next collective.  The hook prints the traceback with the rank's number,
    then calls MPI_Abort, which makes mpiexec stop every rank and exit non-zero.
    """
    previous = sys.excepthook

    def hook(kind, value, tb):
        if issubclass(kind, KeyboardInterrupt):
            previous(kind, value, tb)
            comm.abort(130)
        abort_with_traceback(comm, (kind, value, tb))

    sys.excepthook = hook
    return hook
