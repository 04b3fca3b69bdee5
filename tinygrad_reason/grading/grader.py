"""Answer grading: ``grade(predicted, reference)`` -> bool, with a hard time limit per item.

Pipeline for one pair (all in-process steps are bounded by the parser's size caps and also check
the deadline):

1. normalize both strings (:func:`answers.normalize_answer`); equal (ignoring spaces/case) -> True.
2. parse both with the whitelist parser (:func:`math_parser.parse_answer`) into structures
   (scalars, tuples/intervals, sets, unions, matrices, equations) and compare structurally.
3. scalars: exact Gaussian-rational evaluation (``Fraction``) -- for constants directly, for
   expressions with variables at 5 random rational points (Schwartz-Zippel; any difference is a
   proof of inequality, equality everywhere is overwhelming evidence of identity for rational
   functions).  Decimal literals (``0.3333``) are compared with relative tolerance 1e-6; exact
   forms never are.  Otherwise a 256-bit mpmath evaluation settles clear inequalities.
4. only what is still undecided (e.g. ``\\sqrt{12}`` vs ``2\\sqrt3``, trig identities) goes to
   sympy (``simplify(a - b) == 0`` and friends) in a separate worker process.  The parent waits
   on the worker's pipe with ``poll(remaining_time)``; if no answer comes in time the worker is
   SIGKILLed (``Process.kill``) and the item is graded False.  A fresh worker is forked lazily
   (from a forkserver that has sympy preloaded, so respawns cost milliseconds).  The worker runs
   under an address-space rlimit, so memory blow-ups die there, not here.

Nothing raises: every failure (parse error, RecursionError, MemoryError, worker crash) is False.
The one-time start of the worker machinery (importing sympy in the forkserver, ~1 s) is not
charged to an item's time limit; call :func:`warmup` to pay it up front.
"""
from __future__ import annotations

import atexit
import math
import multiprocessing
import os
import random
import re
import threading
import time
from collections import deque
from fractions import Fraction

from . import answers as _answers
from . import math_parser as _mp
from .math_parser import Node, mk

REL_TOL = 1e-6            # only when a decimal literal is involved
ABS_TOL = 1e-12
N_POINTS = 5              # random points for identity testing
EVAL_BITS = 60_000        # bit cap during point evaluation
STARTUP_TIMEOUT = 60.0    # worker start (not charged to an item)
WORKER_MEM_BYTES = 2 << 30


class _NeedSympy(Exception):
    pass


class _Timeout(Exception):
    pass


class _Undecided(Exception):
    pass


# --------------------------------------------------------------------------------------------
# exact Gaussian-rational evaluation

def _gq_mul(a, b):
    return (a[0] * b[0] - a[1] * b[1], a[0] * b[1] + a[1] * b[0])


def _gq_div(a, b):
    d = b[0] * b[0] + b[1] * b[1]
    if d == 0:
        raise ZeroDivisionError
    return ((a[0] * b[0] + a[1] * b[1]) / d, (a[1] * b[0] - a[0] * b[1]) / d)


def _gq_check(v):
    for x in v:
        if x.numerator.bit_length() > EVAL_BITS or x.denominator.bit_length() > EVAL_BITS:
            raise _Undecided("too big")
    return v


_ZERO, _ONE = Fraction(0), Fraction(1)


def _exact(node: Node, env: dict, deadline: float):
    """Evaluate to a Gaussian rational (re, im) or raise _Undecided / ZeroDivisionError."""
    if time.monotonic() > deadline:
        raise _Timeout
    if node.val is not None:
        return (node.val, _ZERO)
    op, a = node.op, node.args
    if op == "sym":
        return (env[a[0]], _ZERO)
    if op == "I":
        return (_ZERO, _ONE)
    if op in ("add", "sub"):
        x, y = _exact(a[0], env, deadline), _exact(a[1], env, deadline)
        return _gq_check((x[0] + y[0], x[1] + y[1]) if op == "add" else (x[0] - y[0], x[1] - y[1]))
    if op == "neg":
        x = _exact(a[0], env, deadline)
        return (-x[0], -x[1])
    if op == "mul":
        return _gq_check(_gq_mul(_exact(a[0], env, deadline), _exact(a[1], env, deadline)))
    if op == "div":
        return _gq_check(_gq_div(_exact(a[0], env, deadline), _exact(a[1], env, deadline)))
    if op == "pow":
        e = _exact(a[1], env, deadline)
        if e[1] != 0 or e[0].denominator != 1 or abs(e[0]) > _mp.MAX_EXPONENT:
            raise _Undecided("non-integer power")
        b = _exact(a[0], env, deadline)
        n = int(e[0])
        bits = max(b[0].numerator.bit_length(), b[0].denominator.bit_length(),
                   b[1].numerator.bit_length(), b[1].denominator.bit_length())
        if bits * abs(n) > EVAL_BITS:
            raise _Undecided("power too big")
        r, base, k = (_ONE, _ZERO), b, abs(n)
        while k:
            if k & 1:
                r = _gq_mul(r, base)
            k >>= 1
            if k:
                base = _gq_mul(base, base)
        return _gq_div((_ONE, _ZERO), r) if n < 0 else r
    raise _Undecided(op)


# --------------------------------------------------------------------------------------------
# mpmath evaluation (256 bits)

_mpmath = None


def _mpm():
    global _mpmath
    if _mpmath is None:
        import mpmath
        _mpmath = mpmath
    return _mpmath


def _num(node: Node, env: dict, deadline: float):
    """mpmath value of node (env: symbol -> mpf).  Raises on anything unsupported."""
    if time.monotonic() > deadline:
        raise _Timeout
    m = _mpm()
    if node.val is not None:
        return m.mpf(node.val.numerator) / node.val.denominator
    op, a = node.op, node.args
    if op == "sym":
        return env[a[0]]
    if op == "pi":
        return +m.pi
    if op == "E":
        return +m.e
    if op == "I":
        return m.mpc(0, 1)
    if op == "add":
        return _num(a[0], env, deadline) + _num(a[1], env, deadline)
    if op == "sub":
        return _num(a[0], env, deadline) - _num(a[1], env, deadline)
    if op == "mul":
        return _num(a[0], env, deadline) * _num(a[1], env, deadline)
    if op == "div":
        y = _num(a[1], env, deadline)
        if y == 0:
            raise ZeroDivisionError
        return _num(a[0], env, deadline) / y
    if op == "neg":
        return -_num(a[0], env, deadline)
    if op == "pow":
        b, e = _num(a[0], env, deadline), _num(a[1], env, deadline)
        if abs(e) > 10 * _mp.MAX_EXPONENT:
            raise _Undecided("exponent")
        if b == 0 and m.re(e) <= 0:
            raise ZeroDivisionError
        return m.power(b, e)
    if op == "sqrt":
        return m.root(_num(a[0], env, deadline), a[1])
    if op == "func":
        x = _num(a[1], env, deadline)
        if abs(x) > 1e6:
            raise _Undecided("huge argument")
        f = {"ln": m.log, "log": m.log, "arcsin": m.asin, "arccos": m.acos, "arctan": m.atan}.get(a[0])
        f = f or getattr(m, a[0])
        return f(x)
    raise _Undecided(op)


def _close(x, y, rel=REL_TOL) -> bool:
    d = abs(x - y)
    return d <= max(ABS_TOL, rel * max(abs(x), abs(y)))


# --------------------------------------------------------------------------------------------
# sympy (worker only)

def _sympy_equal(a: Node, b: Node) -> bool:
    import sympy
    A, B = _to_sympy_eval(a), _to_sympy_eval(b)
    if A == B:
        return True
    diff = A - B
    if diff == 0:
        return True
    if diff.is_number:
        v = diff.evalf(60)
        if v.is_number and abs(complex(v)) < 1e-45:
            return True
    if sympy.expand(diff) == 0:
        return True
    if sympy.simplify(diff) == 0:
        return True
    try:
        return A.equals(B) is True
    except Exception:  # noqa: BLE001
        return False


def _to_sympy_eval(node: Node):
    import sympy
    if node.val is not None:
        return sympy.Rational(node.val.numerator, node.val.denominator)
    op, a = node.op, node.args
    if op in ("add", "sub", "mul", "div", "pow", "neg", "sqrt", "func"):
        kids = [_to_sympy_eval(x) if isinstance(x, Node) else x for x in a]
        if op == "add":
            return kids[0] + kids[1]
        if op == "sub":
            return kids[0] - kids[1]
        if op == "mul":
            return kids[0] * kids[1]
        if op == "div":
            return kids[0] / kids[1]
        if op == "pow":
            return sympy.Pow(kids[0], kids[1])
        if op == "neg":
            return -kids[0]
        if op == "sqrt":
            return sympy.root(kids[0], kids[1])
        name = kids[0]
        f = {"ln": sympy.log, "log": sympy.log, "arcsin": sympy.asin, "arccos": sympy.acos,
             "arctan": sympy.atan}.get(name) or getattr(sympy, name)
        return f(kids[1])
    return _mp.to_sympy(node)


# --------------------------------------------------------------------------------------------
# scalar / structural comparison

def _has_oo(node: Node) -> bool:
    if node.op == "oo":
        return True
    return any(isinstance(x, Node) and _has_oo(x) for x in node.args)


def _points(syms, k):
    rng = random.Random(0x5EED + 7 * len(syms))
    names = sorted(syms)
    return [{s: Fraction(rng.randint(-10_000, 10_000), rng.randint(1, 97)) for s in names}
            for _ in range(k)]


def _scalar_eq(a: Node, b: Node, ctx) -> bool:
    """True/False, or raise _NeedSympy when only sympy can tell."""
    if a.key() == b.key():
        return True
    if _has_oo(a) or _has_oo(b):
        return False
    dec = a.dec or b.dec
    deadline = ctx["deadline"]
    if a.val is not None and b.val is not None:
        if a.val == b.val:
            return True
        return dec and _close(float(a.val), float(b.val)) if _fits_float(a.val, b.val) else False
    syms = a.syms | b.syms
    # exact evaluation (constants: once; expressions: at random rational points)
    pts = [{}] if not syms else _points(syms, N_POINTS)
    all_equal, decided_points = True, 0
    for env in pts:
        try:
            x, y = _exact(a, env, deadline), _exact(b, env, deadline)
        except (_Undecided, ZeroDivisionError, KeyError):
            all_equal = False
            break
        decided_points += 1
        if x != y:
            if dec and not syms:
                return _close(complex(float(x[0]), float(x[1])), complex(float(y[0]), float(y[1])))
            if not dec:
                return False
            all_equal = False
            break
    if all_equal and decided_points == len(pts):
        return True
    # numeric evaluation
    m = _mpm()
    with m.workprec(256):
        if not syms:
            try:
                x, y = _num(a, {}, deadline), _num(b, {}, deadline)
                if dec:
                    return _close(complex(x), complex(y))
                if abs(x - y) > m.mpf(10) ** -25 * max(1, abs(x), abs(y)):
                    return False
            except (_Undecided, ZeroDivisionError, ValueError, ArithmeticError, KeyError, TypeError):
                pass
        else:
            rng = random.Random(12345)
            for _ in range(3):
                env = {s: m.mpf(rng.uniform(0.5, 2.5)) for s in sorted(syms)}
                try:
                    x, y = _num(a, env, deadline), _num(b, env, deadline)
                except (_Undecided, ZeroDivisionError, ValueError, ArithmeticError, KeyError, TypeError):
                    continue
                if not (m.isfinite(x) and m.isfinite(y)):
                    continue
                tol = m.mpf(10) ** -6 if dec else m.mpf(10) ** -25
                if abs(x - y) > tol * max(1, abs(x), abs(y)):
                    return False
    if ctx["sympy"]:
        return _sympy_equal(a, b)
    raise _NeedSympy


def _fits_float(*vals) -> bool:
    return all(abs(v) < 1e300 and (v == 0 or abs(v) > 1e-300) for v in vals)


def _set_eq(xs, ys, ctx) -> bool:
    if len(xs) != len(ys):
        return False
    n = len(xs)
    need = False
    ok = [[False] * n for _ in range(n)]
    for i in range(n):
        for j in range(n):
            try:
                ok[i][j] = _values_eq(xs[i], ys[j], ctx)
            except _NeedSympy:
                need = True
    match = [-1] * n                     # bipartite matching (augmenting paths)

    def augment(i, seen):
        for j in range(n):
            if ok[i][j] and not seen[j]:
                seen[j] = True
                if match[j] < 0 or augment(match[j], seen):
                    match[j] = i
                    return True
        return False

    if all(augment(i, [False] * n) for i in range(n)):
        return True
    if need:
        raise _NeedSympy
    return False


def _sub(l: Node, r: Node) -> Node:
    return mk("sub", l, r)


def _values_eq(p, r, ctx) -> bool:
    tp, tr = p[0], r[0]
    if tp == "expr" and tr == "expr":
        return _scalar_eq(p[1], r[1], ctx)
    if tp == "set" and len(p[1]) == 1 and tr != "set":
        return _values_eq(p[1][0], r, ctx)
    if tr == "set" and len(r[1]) == 1 and tp != "set":
        return _values_eq(p, r[1][0], ctx)
    if tp in ("set", "union") and tp == tr:
        return _set_eq(p[1], r[1], ctx)
    if tp == "seq" and tr == "seq":
        if p[1] != r[1] or p[2] != r[2] or len(p[3]) != len(r[3]):
            return False
        return all(_values_eq(x, y, ctx) for x, y in zip(p[3], r[3]))
    if tp == "matrix" or tr == "matrix":
        pm, rm = _as_matrix(p), _as_matrix(r)
        if pm is None or rm is None or len(pm) != len(rm) or len(pm[0]) != len(rm[0]):
            return False
        return all(_scalar_eq(x, y, ctx) for pr, rr in zip(pm, rm) for x, y in zip(pr, rr))
    if tp == "eq" and tr == "eq":
        (l1, r1), (l2, r2) = p[1:], r[1:]
        if l1.op == "sym" and l2.op == "sym" and l1.args == l2.args:
            return _scalar_eq(r1, r2, ctx)
        d1, d2 = _sub(l1, r1), _sub(l2, r2)
        try:
            if _scalar_eq(d1, d2, ctx):
                return True
        except _NeedSympy:
            if _scalar_eq(d1, mk("neg", d2), ctx):
                return True
            raise
        return _scalar_eq(d1, mk("neg", d2), ctx)
    if tp == "eq" and tr == "expr" and p[1].op == "sym":
        return _scalar_eq(p[2], r[1], ctx)
    if tr == "eq" and tp == "expr" and r[1].op == "sym":
        return _scalar_eq(p[1], r[2], ctx)
    return False


def _as_matrix(v):
    if v[0] == "matrix":
        return v[1]
    if v[0] == "seq" and v[1] == "(" and v[2] == ")" and all(x[0] == "expr" for x in v[3]):
        return [[x[1]] for x in v[3]]        # (a, b, c) == column vector
    return None


_SPACE_RE = re.compile(r"\s+")
_BASE_NUM = re.compile(r"^([0-9A-Za-z]+)_([0-9]+)$")


def _text_key(s: str) -> str:
    return _SPACE_RE.sub("", s).lower()


def _compare_normalized(np_: str, nr: str, use_sympy: bool, deadline: float) -> bool:
    """Compare two normalized answers.  Raises _NeedSympy when use_sympy is False and sympy
    is required; _Timeout when the deadline passes."""
    if not np_ or not nr:
        return False
    if np_ == nr or _text_key(np_) == _text_key(nr):
        return True
    mb = _BASE_NUM.match(nr)              # "52_8": accept "52" as well
    if mb and _text_key(np_) == mb.group(1).lower():
        return True
    mb = _BASE_NUM.match(np_)
    if mb and _text_key(nr) == mb.group(1).lower():
        return True
    vp = _mp.parse_answer(np_)
    if vp is None:
        return False
    vr = _mp.parse_answer(nr)
    if vr is None:
        return False
    ctx = {"deadline": deadline, "sympy": use_sympy}
    return bool(_values_eq(vp, vr, ctx))


def _prepare(predicted, reference):
    """Unwrap a final \\boxed{} if present and normalize both sides."""
    out = []
    for s in (predicted, reference):
        if not isinstance(s, str):
            return None
        if len(s) > _answers.MAX_NORMALIZE_LEN and "\\boxed" not in s and "\\fbox" not in s:
            return None
        if "\\boxed" in s or "\\fbox" in s:
            b = _answers.last_boxed(s)
            if b is not None:
                s = b
        out.append(_answers.normalize_answer(s))
    return out


_NEED = object()


def _fast(predicted, reference, deadline):
    """In-process grading: True/False, or _NEED with the normalized pair for the worker."""
    try:
        prep = _prepare(predicted, reference)
        if prep is None:
            return False, None
        np_, nr = prep
        try:
            return bool(_compare_normalized(np_, nr, False, deadline)), None
        except _NeedSympy:
            return _NEED, (np_, nr)
        except _Timeout:
            return False, None
        except Exception:  # noqa: BLE001 - unexpected: let the sandboxed worker decide
            return _NEED, (np_, nr)
    except Exception:  # noqa: BLE001
        return False, None


# --------------------------------------------------------------------------------------------
# worker processes

def _worker_main(conn):
    import signal
    try:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
    except Exception:  # noqa: BLE001
        pass
    try:
        import resource
        with open("/proc/self/statm") as f:
            vm = int(f.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
        lim = vm + WORKER_MEM_BYTES
        resource.setrlimit(resource.RLIMIT_AS, (lim, lim))
    except Exception:  # noqa: BLE001
        pass
    import sys
    sys.setrecursionlimit(5000)
    import sympy  # noqa: F401
    conn.send(("ready",))
    while True:
        try:
            msg = conn.recv()
        except (EOFError, OSError):
            return
        except BaseException:  # noqa: BLE001
            return
        tid, np_, nr, budget = msg
        try:
            res = bool(_compare_normalized(np_, nr, True, time.monotonic() + budget))
        except BaseException:  # noqa: BLE001 - RecursionError, MemoryError, sympy bugs ...
            res = False
        try:
            conn.send((tid, res))
        except BaseException:  # noqa: BLE001
            return


_PRELOAD_ENV = "TINYGRAD_REASON_GRADER_FORKSERVER_WARM"


def _warm_sympy():
    """Exercise the sympy paths the worker uses so lazy imports / caches are filled."""
    try:
        import sympy
        x = sympy.Symbol("x")
        sympy.simplify(sympy.sin(x) ** 2 + sympy.cos(x) ** 2 - 1)
        sympy.simplify(sympy.cot(x) - sympy.cos(x) / sympy.sin(x))
        sympy.simplify(sympy.sqrt(12) - 2 * sympy.sqrt(3))
        sympy.expand((x + 1) ** 3 - x)
        (sympy.sqrt(2) + sympy.pi).evalf(60)
        (sympy.sqrt(2) + 1).equals(sympy.sqrt(3))
        _compare_normalized(r"\sqrt{12}", r"2\sqrt{3}", True, time.monotonic() + 5)
    except Exception:  # noqa: BLE001
        pass


_CTX = None
_CTX_LOCK = threading.Lock()


def _context():
    global _CTX
    with _CTX_LOCK:
        if _CTX is None:
            method = os.environ.get("TINYGRAD_REASON_GRADER_START")
            if method is None:
                method = "forkserver" if "forkserver" in multiprocessing.get_all_start_methods() else "spawn"
            ctx = multiprocessing.get_context(method)
            if method == "forkserver":
                try:
                    ctx.set_forkserver_preload(["sympy", "tinygrad_reason.reasoning.grader"])
                    # start the forkserver now, with a flag that makes ITS import of this module
                    # warm sympy up (lazy submodules, caches): every forked worker starts warm.
                    from multiprocessing import forkserver
                    os.environ[_PRELOAD_ENV] = "1"
                    try:
                        forkserver.ensure_running()
                    finally:
                        os.environ.pop(_PRELOAD_ENV, None)
                except Exception:  # noqa: BLE001
                    pass
            _CTX = ctx
        return _CTX


_MAIN_LOCK = threading.Lock()


def _start_without_main(proc):
    """Start a forkserver/spawn child WITHOUT re-importing the parent's ``__main__`` script.

    multiprocessing normally re-imports the main script in such children (as ``__mp_main__``),
    which would re-run an unguarded training / eval script inside the grader worker.  The
    worker needs nothing from ``__main__`` (its target lives in this module), so the main
    module is hidden for the instant ``start()`` records the preparation data."""
    import sys
    import types
    if _context().get_start_method() == "fork":
        proc.start()
        return
    with _MAIN_LOCK:
        saved = sys.modules.get("__main__")
        sys.modules["__main__"] = types.ModuleType("__main__")
        try:
            proc.start()
        finally:
            if saved is not None:
                sys.modules["__main__"] = saved


class _Worker:
    def __init__(self):
        self.proc = None
        self.conn = None
        self.ready = False
        self.tid = 0

    def alive(self):
        return self.proc is not None and self.proc.is_alive()

    def spawn(self):
        """Start a process without waiting for it to be ready."""
        try:
            ctx = _context()
            parent, child = ctx.Pipe(duplex=True)
            proc = ctx.Process(target=_worker_main, args=(child,), daemon=True)
            _start_without_main(proc)
            child.close()
            self.proc, self.conn, self.ready = proc, parent, False
        except Exception:  # noqa: BLE001
            self.kill()

    def ensure(self):
        """Start if needed and wait until ready (not charged to items).  False if impossible."""
        if self.proc is not None and self.ready and self.proc.is_alive():
            return True
        if self.proc is None or not self.proc.is_alive():
            self.kill()
            self.spawn()
        if self.proc is None:
            return False
        try:
            if not self.conn.poll(STARTUP_TIMEOUT):
                self.kill()
                return False
            self.ready = self.conn.recv() == ("ready",)
            if not self.ready:
                self.kill()
            return self.ready
        except Exception:  # noqa: BLE001
            self.kill()
            return False

    def submit(self, np_, nr, budget):
        self.tid += 1
        self.conn.send((self.tid, np_, nr, budget))
        return self.tid

    def kill(self):
        proc, conn = self.proc, self.conn
        self.proc = self.conn = None
        self.ready = False
        if proc is not None:
            try:
                if proc.is_alive():
                    proc.kill()              # SIGKILL: sympy cannot ignore or delay it
                proc.join(2.0)
            except Exception:  # noqa: BLE001
                pass
            try:
                proc.close()
            except Exception:  # noqa: BLE001
                pass
        if conn is not None:
            try:
                conn.close()
            except Exception:  # noqa: BLE001
                pass


_POOL: list[_Worker] = []
_POOL_LOCK = threading.RLock()


def _workers(k):
    while len(_POOL) < k:
        _POOL.append(_Worker())
    return _POOL[:k]


@atexit.register
def shutdown():
    """Kill all worker processes (they are restarted on demand)."""
    for w in list(_POOL):
        w.kill()


def warmup(workers: int = 1) -> bool:
    """Start the worker process(es) now so the first graded item doesn't pay for it."""
    with _POOL_LOCK:
        return all(w.ensure() for w in _workers(max(1, workers)))


# --------------------------------------------------------------------------------------------
# public API

def grade(predicted: str, reference: str, timeout: float = 1.0) -> bool:
    """Is ``predicted`` equivalent to ``reference``?  Never raises; returns within ~``timeout``
    (plus process-kill overhead).  A trailing ``\\boxed{}`` in either string is unwrapped; use
    :func:`grade_response` for a full model response."""
    return grade_many([(predicted, reference)], timeout=timeout, workers=1)[0]


def grade_response(response: str, reference: str, timeout: float = 1.0, **extract_kw) -> bool:
    """Extract the answer from a full model response (:func:`answers.extract_answer`) and grade."""
    ans = _answers.extract_answer(response, **extract_kw)
    if ans is None:
        return False
    return grade(ans, reference, timeout=timeout)


def grade_many(pairs, timeout: float = 1.0, workers: int = 2) -> list[bool]:
    """Grade ``[(predicted, reference), ...]``.  Each item keeps its own ``timeout``: fast paths
    run in-process; items needing sympy are spread over ``workers`` processes, and an item whose
    worker exceeds its limit is graded False and its worker killed (the rest go on).  Total time
    is bounded by about ``len(pairs) / workers * timeout``."""
    try:
        pairs = list(pairs)
    except Exception:  # noqa: BLE001
        return []
    results = [False] * len(pairs)
    queue = deque()
    for i, pair in enumerate(pairs):
        try:
            p, r = pair
        except Exception:  # noqa: BLE001
            continue
        t0 = time.monotonic()
        res, prep = _fast(p, r, t0 + timeout)
        if res is _NEED:
            left = timeout - (time.monotonic() - t0)
            if left > 0:
                queue.append((i, prep[0], prep[1], left))
        else:
            results[i] = bool(res)
    if queue:
        try:
            _run_queue(queue, results, max(1, int(workers)))
        except Exception:  # noqa: BLE001
            pass
    return results


def _run_queue(queue, results, nworkers):
    from multiprocessing.connection import wait
    with _POOL_LOCK:
        pool = _workers(min(nworkers, len(queue)))
        busy = {}                            # worker -> (item index, tid, deadline)
        while queue or busy:
            for w in pool:
                if w in busy or not queue:
                    continue
                if not w.ensure():           # cannot start a worker: grade False
                    i = queue.popleft()[0]
                    results[i] = False
                    continue
                i, np_, nr, budget = queue.popleft()
                try:
                    tid = w.submit(np_, nr, budget)
                except Exception:  # noqa: BLE001
                    w.kill()
                    results[i] = False
                    continue
                busy[w] = (i, tid, time.monotonic() + budget)
            if not busy:
                continue
            now = time.monotonic()
            wait_s = max(0.0, min(d for (_, _, d) in busy.values()) - now)
            conns = {w.conn: w for w in busy}
            try:
                ready = wait(list(conns), timeout=wait_s)
            except Exception:  # noqa: BLE001
                ready = []
            for c in ready:
                w = conns[c]
                i, tid, _ = busy.pop(w)
                try:
                    msg = c.recv()
                    results[i] = bool(msg[1]) if msg[0] == tid else False
                except Exception:  # noqa: BLE001 - worker died (crash, rlimit): False
                    results[i] = False
                    w.kill()
            now = time.monotonic()
            for w in [w for w, (_, _, d) in busy.items() if d <= now]:
                i, _, _ = busy.pop(w)
                results[i] = False
                w.kill()                     # stuck in sympy: SIGKILL
                w.spawn()                    # replacement starts now, in the background


if os.environ.get(_PRELOAD_ENV) == "1":      # only inside the grader's forkserver process
    _warm_sympy()
