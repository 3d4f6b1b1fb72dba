"""The one place numba is configured.

Every kernel is decorated with :func:`kernel` (serial) or :func:`parallel_kernel`
(may start numba's thread pool), so the compilation options live here and
nowhere else.

- ``cache=True``: compiled machine code is written next to the module (or to
  ``NUMBA_CACHE_DIR``) so that only the first use on a machine pays the
  compile time.
- ``nogil=True``: a caller may run fits in Python threads concurrently.
- ``fastmath={"reassoc", "contract"}``: the two flags the dot product and the
  factor updates need to vectorize (SIMD) and use fused multiply-add. The
  full fast-math set would also assume no NaN/inf ("nnan", "ninf"), which would
  let LLVM delete the finiteness checks that catch a diverging run.
- ``error_model="numpy"``: division follows IEEE rules instead of raising
  ``ZeroDivisionError``, which keeps the inner loops free of branches.

Bounds checking stays at numba's default (off, unless ``NUMBA_BOUNDSCHECK=1``
is set in the environment, as the CI does once): indices are validated in
Python before any kernel runs.

:func:`prefetch` is a cache hint (``llvm.prefetch``) that numba does not expose,
used by the SGD and objective kernels. :func:`row_dot_and_norms` and
:func:`row_step` are the SGD step's two passes over a pair of rows, written in
LLVM vectors. :func:`opaque` (``llvm.arithmetic.fence``)
keeps one value out of the reassociation that ``fastmath`` otherwise allows.

:class:`CompileTimeChoice` is the other extension: a Python object that a
kernel takes as an argument and that numba types by its name alone, so each
choice gets its own specialization (and cache entry) and a kernel compiles
only the code of the choice it was called with. The losses are such choices
(:mod:`fastmf._losses`): a squared-loss fit never compiles the logistic code.

Thread count: :func:`numba_threads` sets numba's thread count for the current
thread only while a fit runs, and restores it afterwards; serial fits never
touch it and never start the thread pool, so they are safe in forked workers.
It also falls back to one thread (same bits, a :class:`SerialFallbackWarning`
once) where parallel kernels would crash or hang the process: in a child
forked after the parent started a GNU OpenMP pool, and, on the workqueue
layer (not thread-safe), while another thread runs a parallel kernel.
"""

import os
import threading
import warnings
from contextlib import contextmanager
from numbers import Integral

import numba
from llvmlite import ir
from numba.core import cgutils, types
from numba.extending import (
    NativeValue,
    intrinsic,
    models,
    register_model,
    typeof_impl,
    unbox,
)

from .exceptions import SerialFallbackWarning

FASTMATH_FLAGS = frozenset({"reassoc", "contract"})
_OPTIONS = dict(cache=True, nogil=True, error_model="numpy")


def _njit(func, **options):
    """``numba.njit`` with fastmf's options; without the disk cache where none can be written.

    numba caches next to the module, else in the user's cache folder (or
    ``NUMBA_CACHE_DIR``). When neither is writable (a read-only install run
    by a user without a home folder, say) it refuses ``cache=True`` outright;
    fastmf then compiles in memory, once per process (``show_config`` says so).
    """
    try:
        return numba.njit(fastmath=set(FASTMATH_FLAGS), **_OPTIONS, **options)(func)
    except RuntimeError as error:
        if "no locator available" not in str(error):
            raise
        uncached = {**_OPTIONS, "cache": False}
        return numba.njit(fastmath=set(FASTMATH_FLAGS), **uncached, **options)(func)


def kernel(func):
    """Compile ``func`` lazily (once per dtype signature) as a serial kernel."""
    return _njit(func)


def inline_kernel(func):
    """Compile a small helper that numba inlines into its callers (at numba IR level).

    Inlining before typing lets a caller's compile-time constants (such as a
    ``numba.literally`` flag) prune the helper's branches, which LLVM alone
    would not do for a helper too large to inline.
    """
    return _njit(func, inline="always")


def parallel_kernel(func):
    """Compile ``func`` lazily as a kernel whose ``numba.prange`` loops run in parallel."""
    return _njit(func, parallel=True)


@intrinsic
def prefetch(typingctx, array, row, column):
    """Ask the CPU to start loading the cache line of ``array[row, column]`` (a 2-D array).

    Compiles to LLVM's ``llvm.prefetch`` (a read, kept in all cache levels):
    a hint that never faults and changes no value, so results do not depend
    on it. numba exposes no prefetch of its own.
    """
    if not (isinstance(array, types.Array) and array.ndim == 2):
        return None
    if not (isinstance(row, types.Integer) and isinstance(column, types.Integer)):
        return None

    def codegen(context, builder, signature, args):
        array_type, row_type, column_type = signature.args
        data = context.make_array(array_type)(context, builder, args[0])
        indices = [
            context.cast(builder, args[1], row_type, types.intp),
            context.cast(builder, args[2], column_type, types.intp),
        ]
        pointer = cgutils.get_item_pointer(context, builder, array_type, data, indices)
        byte_pointer = ir.IntType(8).as_pointer()
        int32 = ir.IntType(32)
        function = cgutils.get_or_insert_function(
            builder.module,
            ir.FunctionType(ir.VoidType(), [byte_pointer, int32, int32, int32]),
            "llvm.prefetch.p0i8",
        )
        # Arguments: address, 0 = read, 3 = keep in all cache levels, 1 = data cache.
        builder.call(
            function,
            [
                builder.bitcast(pointer, byte_pointer),
                ir.Constant(int32, 0),
                ir.Constant(int32, 3),
                ir.Constant(int32, 1),
            ],
        )
        return context.get_dummy_value()

    return types.void(array, row, column), codegen


@intrinsic
def opaque(typingctx, value):
    """Return ``value`` (a float32), as a result that fast-math may not reassociate into.

    Compiles to LLVM's ``llvm.arithmetic.fence``, which costs no instruction.
    With ``reassoc``, LLVM rewrites ``(a / b) * x`` inside a loop as
    ``(a * x) / b``: a division per vector of ``x`` instead of one before the
    loop. Fencing ``a / b`` keeps the one division.
    """
    if value != types.float32:
        return None

    def codegen(context, builder, signature, args):
        float32 = ir.FloatType()
        function = cgutils.get_or_insert_function(
            builder.module, ir.FunctionType(float32, [float32]), "llvm.arithmetic.fence.f32"
        )
        return builder.call(function, [args[0]])

    return types.float32(types.float32), codegen


# Floats per vector in :func:`row_dot_and_norms` (an AVX register). LLVM splits
# wider vectors than a target has (SSE, NEON), so any CPU runs the same IR.
_VECTOR_WIDTH = 8


def _row_start(context, builder, array_type, array, row, row_type):
    """Return a pointer to ``array[row, 0]`` (a C-contiguous 2-D array)."""
    data = context.make_array(array_type)(context, builder, array)
    index = [context.cast(builder, row, row_type, types.intp), context.get_constant(types.intp, 0)]
    return cgutils.get_item_pointer(context, builder, array_type, data, index)


def _load_vector(builder, pointer, offset):
    vector = ir.VectorType(ir.FloatType(), _VECTOR_WIDTH)
    address = builder.bitcast(builder.gep(pointer, [offset]), vector.as_pointer())
    return builder.load(address, align=4)


def _shuffle(builder, first, second, lanes):
    int32 = ir.IntType(32)
    return builder.shuffle_vector(
        first, second, ir.Constant(ir.VectorType(int32, len(lanes)), lanes)
    )


def _lane_sums(builder, vector, groups):
    """Return the sum of ``vector``'s lanes in each of ``groups`` (4 lanes each), by halving."""
    undefined = ir.Constant(vector.type, ir.Undefined)
    sums = []
    for group in groups:
        four = _shuffle(builder, vector, undefined, group)
        spare = ir.Constant(four.type, ir.Undefined)
        two = builder.fadd(
            _shuffle(builder, four, spare, [0, 1]), _shuffle(builder, four, spare, [2, 3])
        )
        first, second = (
            builder.extract_element(two, ir.Constant(ir.IntType(32), j)) for j in (0, 1)
        )
        sums.append(builder.fadd(first, second))
    return sums


def _is_float32_rows(typ):
    return (
        isinstance(typ, types.Array)
        and typ.ndim == 2
        and typ.dtype == types.float32
        and typ.layout == "C"
    )


@intrinsic
def row_dot_and_norms(typingctx, a, row_a, b, row_b, length):
    """Return ``(a[row_a] . b[row_b], |a[row_a]|^2, |b[row_b]|^2)`` as float32.

    ``a``, ``b``: C-contiguous float32 2-D arrays whose rows hold at least
    ``length`` floats (not checked: the callers' factor matrices and their
    row length). A ``length`` that is a compile-time constant after inlining
    (a fixed-width kernel, :func:`fastmf._kernels.row_length`) lets LLVM
    unroll the whole computation into straight-line code. Written in LLVM vectors of
    ``_VECTOR_WIDTH`` floats: two accumulators for the dot product and one per
    norm over 16 floats at a time, then one more vector and a scalar tail,
    and the three sums' halving reductions interleaved. LLVM's own
    vectorization of the loop keeps four accumulators per sum and reduces
    each on its own; for short rows that tail dominates (see
    ``_FUSED_NORMS_MAX_K`` in :mod:`fastmf._kernels`).
    """
    if not (_is_float32_rows(a) and _is_float32_rows(b)):
        return None
    if not all(isinstance(index, types.Integer) for index in (row_a, row_b, length)):
        return None

    def codegen(context, builder, signature, args):
        a_type, row_a_type, b_type, row_b_type, length_type = signature.args
        start_a = _row_start(context, builder, a_type, args[0], args[1], row_a_type)
        start_b = _row_start(context, builder, b_type, args[2], args[3], row_b_type)
        k = context.cast(builder, args[4], length_type, types.intp)
        intp = k.type
        vector = ir.VectorType(ir.FloatType(), _VECTOR_WIDTH)
        zeros = ir.Constant(vector, [0.0] * _VECTOR_WIDTH)
        # Stack slots that LLVM promotes to registers: dot (two), |a|^2, |b|^2.
        slots = [cgutils.alloca_once_value(builder, zeros) for _ in range(4)]

        def accumulate(offset, dot_slot):
            x = _load_vector(builder, start_a, offset)
            y = _load_vector(builder, start_b, offset)
            for slot, (left, right) in zip(
                (dot_slot, slots[2], slots[3]), ((x, y), (x, x), (y, y))
            ):
                builder.store(builder.fadd(builder.load(slot), builder.fmul(left, right)), slot)

        pairs = builder.lshr(k, ir.Constant(intp, 4))
        with cgutils.for_range(builder, pairs) as loop:
            offset = builder.shl(loop.index, ir.Constant(intp, 4))
            accumulate(offset, slots[0])
            accumulate(builder.add(offset, ir.Constant(intp, _VECTOR_WIDTH)), slots[1])
        width = ir.Constant(intp, _VECTOR_WIDTH)
        with builder.if_then(builder.icmp_unsigned("!=", builder.and_(k, width), k.type(0))):
            accumulate(builder.shl(pairs, ir.Constant(intp, 4)), slots[0])
        dot = builder.fadd(builder.load(slots[0]), builder.load(slots[1]))
        a_norm, b_norm = builder.load(slots[2]), builder.load(slots[3])
        # Halves of (dot, |a|^2) in one vector, of |b|^2 in another: two adds for three sums.
        low, high = list(range(4)) + list(range(8, 12)), list(range(4, 8)) + list(range(12, 16))
        dot_and_a = builder.fadd(
            _shuffle(builder, dot, a_norm, low), _shuffle(builder, dot, a_norm, high)
        )
        b_halves = builder.fadd(
            _shuffle(builder, b_norm, b_norm, low), _shuffle(builder, b_norm, b_norm, high)
        )
        sums = _lane_sums(builder, dot_and_a, [[0, 1, 2, 3], [4, 5, 6, 7]])
        sums += _lane_sums(builder, b_halves, [[0, 1, 2, 3]])
        totals = [cgutils.alloca_once_value(builder, value) for value in sums]
        tail = builder.and_(k, ir.Constant(intp, ~(_VECTOR_WIDTH - 1)))
        with cgutils.for_range_slice(builder, tail, k, intp(1), inc=True) as (f, _):
            x = builder.load(builder.gep(start_a, [f]))
            y = builder.load(builder.gep(start_b, [f]))
            for total, (left, right) in zip(totals, ((x, y), (x, x), (y, y))):
                builder.store(builder.fadd(builder.load(total), builder.fmul(left, right)), total)
        values = [builder.load(total) for total in totals]
        return context.make_tuple(builder, signature.return_type, values)

    return types.UniTuple(types.float32, 3)(a, row_a, b, row_b, length), codegen


class CompileTimeChoice:
    """Base of Python objects that kernels take as a compile-time choice.

    An instance is typed by numba as :class:`ChoiceType` of its ``name`` (its
    attributes are invisible to compiled code, and nothing is passed at run
    time); a kernel's ``@overload`` reads the instance back with
    :func:`chosen` while typing and picks the code to compile. Names are
    unique, and an instance pickles by name, so Dask workers get the same one.
    """

    _registry = {}

    def __init__(self, name):
        if name in CompileTimeChoice._registry:
            raise ValueError(f"a compile-time choice named {name!r} exists already")
        self.name = name
        CompileTimeChoice._registry[name] = self

    def __reduce__(self):
        return chosen_by_name, (self.name,)


def chosen_by_name(name):
    """Return the :class:`CompileTimeChoice` called ``name``."""
    return CompileTimeChoice._registry[name]


class ChoiceType(types.Dummy):
    """The numba type of one :class:`CompileTimeChoice` (cacheable: it holds a name only)."""

    def __init__(self, name):
        self.choice_name = name
        super().__init__(name=f"CompileTimeChoice({name})")


def chosen(typ):
    """Return the :class:`CompileTimeChoice` that a :class:`ChoiceType` stands for."""
    return chosen_by_name(typ.choice_name)


@typeof_impl.register(CompileTimeChoice)
def _typeof_choice(value, context):
    return ChoiceType(value.name)


register_model(ChoiceType)(models.OpaqueModel)


@unbox(ChoiceType)
def _unbox_choice(typ, obj, context):
    return NativeValue(context.context.get_dummy_value())


def max_threads():
    """Return the size of numba's thread pool (``NUMBA_NUM_THREADS``, all cores by default)."""
    return numba.config.NUMBA_NUM_THREADS


def resolve_threads(n_threads):
    """Turn an ``n_threads`` hyperparameter into a thread count in [1, max_threads()].

    ``None`` or 0 means all of numba's threads; larger requests are capped there.
    """
    if n_threads is None or n_threads == 0:
        return max_threads()
    if isinstance(n_threads, bool) or not isinstance(n_threads, Integral) or n_threads < 0:
        raise ValueError(
            f"n_threads must be None, 0 (all cores) or a positive integer, got {n_threads!r}."
        )
    return min(int(n_threads), max_threads())


# Parallel kernels running now (for layers that allow only one at a time), and
# whether this process is a child forked after its parent started a pool that
# cannot survive a fork.
_lock = threading.Lock()
_parallel_calls = 0
_forked_unsafe_pool = False
_warned = set()


def pool_started():
    """Whether numba's thread pool has been started in this process (or its parent)."""
    from numba.np.ufunc import parallel

    return bool(parallel._is_initialized)


def threading_layer():
    """Return numba's threading layer ("tbb", "omp" or "workqueue"); None before the pool starts."""
    try:
        return numba.threading_layer()
    except ValueError:
        return None


def _fork_unsafe_layer():
    """Whether the running pool aborts a forked child that uses it (GNU OpenMP)."""
    if threading_layer() != "omp":
        return False
    try:
        from numba.np.ufunc import omppool
    except ImportError:  # pragma: no cover - the omp layer is loaded when it is in use
        return True
    return getattr(omppool, "openmp_vendor", "GNU") == "GNU"


def _after_fork_in_child():
    global _forked_unsafe_pool, _parallel_calls, _lock
    _lock = threading.Lock()  # a thread of the parent may have held it
    _parallel_calls = 0
    if pool_started() and _fork_unsafe_layer():
        _forked_unsafe_pool = True


os.register_at_fork(after_in_child=_after_fork_in_child)


def _warn_once(reason, message):
    if reason not in _warned:
        _warned.add(reason)
        warnings.warn(message, SerialFallbackWarning, stacklevel=4)


@contextmanager
def numba_threads(n_threads):
    """Run the body with up to ``n_threads`` of numba's threads; yields the count to use.

    Yields 1 (serial kernels, no thread pool) where parallel kernels are
    unsafe; see the module docstring.
    """
    global _parallel_calls
    if n_threads > 1 and _forked_unsafe_pool:
        _warn_once(
            "fork",
            "fastmf runs on one thread in this process: it was forked after its parent "
            "started numba's GNU OpenMP thread pool, which would abort it. Start worker "
            "processes with the 'spawn' or 'forkserver' method (multiprocessing.get_context), "
            "or install tbb and set NUMBA_THREADING_LAYER=tbb, to fit on several threads.",
        )
        n_threads = 1
    if n_threads == 1:
        yield 1
        return
    with _lock:
        if not pool_started():
            from numba.np.ufunc import parallel

            parallel._launch_threads()  # now the layer is known
        exclusive = threading_layer() == "workqueue"
        if exclusive and _parallel_calls:
            n_threads = 1
        else:
            _parallel_calls += 1
    if n_threads == 1:
        _warn_once(
            "workqueue",
            "fastmf ran this call (a fit or a batch recommendation) on one thread: numba's "
            "'workqueue' threading layer runs one parallel kernel at a time and another call "
            "was using it. Install tbb (and set NUMBA_THREADING_LAYER=tbb) or an OpenMP "
            "runtime for concurrent parallel calls.",
        )
        yield 1
        return
    previous = numba.get_num_threads()
    numba.set_num_threads(n_threads)
    try:
        yield n_threads
    finally:
        numba.set_num_threads(previous)
        with _lock:
            _parallel_calls -= 1


def _contracted(instruction):
    # Only "contract" (LLVM may fuse a multiply and an add, as the kernels'
    # fastmath allows); no reassociation, so the rounding is fixed.
    instruction.flags.append("contract")
    return instruction


@intrinsic
def row_step(typingctx, a, row_a, b, row_b, length, gradient, l2, rate_a, rate_b):
    """Apply ``a[row_a] += rate_a * (g * b[row_b] - l2 * a[row_a])`` and the mirror step to ``b``.

    Both rows move from their old values: each vector of ``a`` and ``b`` is
    loaded before either is stored. ``a``, ``b``: C-contiguous float32 2-D
    arrays whose rows hold at least ``length`` floats (not checked), and
    distinct (the callers' user and item factors; rows of one array that
    overlapped would not be updated as two rows are). Written in LLVM vectors
    of ``_VECTOR_WIDTH`` floats and a scalar tail, so no overlap check or
    loop remainder is left to LLVM's vectorizer, whatever ``length`` is.
    """
    if not (_is_float32_rows(a) and _is_float32_rows(b)):
        return None
    if not all(isinstance(index, types.Integer) for index in (row_a, row_b, length)):
        return None
    if not all(value == types.float32 for value in (gradient, l2, rate_a, rate_b)):
        return None

    def codegen(context, builder, signature, args):
        a_type, row_a_type, b_type, row_b_type, length_type = signature.args[:5]
        start_a = _row_start(context, builder, a_type, args[0], args[1], row_a_type)
        start_b = _row_start(context, builder, b_type, args[2], args[3], row_b_type)
        k = context.cast(builder, args[4], length_type, types.intp)
        intp = k.type
        scalars = args[5:]

        def step(x, y, g, l2, rate):
            pull = _contracted(builder.fmul(l2, x))
            direction = _contracted(builder.fsub(_contracted(builder.fmul(g, y)), pull))
            return _contracted(builder.fadd(x, _contracted(builder.fmul(rate, direction))))

        def update(x, y, values, store):
            g, l2, rate_a, rate_b = values
            store(step(x, y, g, l2, rate_a), step(y, x, g, l2, rate_b))

        vector = ir.VectorType(ir.FloatType(), _VECTOR_WIDTH)
        undefined = ir.Constant(vector, ir.Undefined)
        splats = []
        for value in scalars:
            one = builder.insert_element(undefined, value, ir.Constant(ir.IntType(32), 0))
            splats.append(_shuffle(builder, one, undefined, [0] * _VECTOR_WIDTH))
        vectors = builder.lshr(k, ir.Constant(intp, 3))
        with cgutils.for_range(builder, vectors) as loop:
            offset = builder.shl(loop.index, ir.Constant(intp, 3))
            pointers = [
                builder.bitcast(builder.gep(start, [offset]), vector.as_pointer())
                for start in (start_a, start_b)
            ]
            x, y = (builder.load(pointer, align=4) for pointer in pointers)

            def store_vectors(new_x, new_y, pointers=pointers):
                builder.store(new_x, pointers[0], align=4)
                builder.store(new_y, pointers[1], align=4)

            update(x, y, splats, store_vectors)
        tail = builder.and_(k, ir.Constant(intp, ~(_VECTOR_WIDTH - 1)))
        with cgutils.for_range_slice(builder, tail, k, intp(1), inc=True) as (f, _):
            pointers = [builder.gep(start, [f]) for start in (start_a, start_b)]
            x, y = (builder.load(pointer) for pointer in pointers)

            def store_scalars(new_x, new_y, pointers=pointers):
                builder.store(new_x, pointers[0])
                builder.store(new_y, pointers[1])

            update(x, y, scalars, store_scalars)
        return context.get_dummy_value()

    return types.none(a, row_a, b, row_b, length, gradient, l2, rate_a, rate_b), codegen
