"""Run a parse in a child process with CPU-time, wall-time and memory limits.

Users' files are read in a child (`python -c "...child_main()"`), never in the server: pypdf and
python-docx are pure Python, so a hostile file would hold the server's GIL and a core for hours (an
806 KB PDF whose 2,000 pages share a 5 MB content stream costs 9-11 s of extraction a page). The
child limits itself (RLIMIT_CPU, RLIMIT_AS, no core file), lowers its priority, arms an alarm and
asks the kernel to kill it with its parent, so even an orphan ends soon; the parent kills it at the
wall deadline. At most `parallel` children of one process run at once, and stop_parses() kills the
running ones (the server's shutdown), so nothing burns a core after the server is gone.

The call and its outcome travel as pickles over the child's stdin and stdout. The child runs our own
code: a file's bytes only ever become strings inside the pickled records, never pickle opcodes.
"""

import ctypes
import logging
import math
import os
import pickle
import resource
import signal
import subprocess
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from service.ingest.read import OverLimit, ReadError, size_text

logger = logging.getLogger("dangjian_qa")

NICENESS = 5  # searches first, yet a parse is not starved on a busy machine (nice 10 was, at load 15)
CHILD_COMMAND = "from service.ingest.isolate import child_main; child_main()"
CHILD_CWD = Path(__file__).resolve().parents[2]  # where `service` is importable even without an install
PR_SET_PDEATHSIG = 1  # linux/prctl.h
ORPHAN_GRACE_SECONDS = 5  # the child's own alarm rings this long after the parent's wall deadline


@dataclass(frozen=True)
class ProcessLimits:
    """What one parse may cost the machine, and how many parses of one process run at once."""

    cpu_seconds: int
    wall_seconds: float
    memory_bytes: int
    parallel: int = 1


class ParseLimitExceeded(OverLimit):
    """Reading the file took more CPU time, wall time or memory than its ProcessLimits allow."""


class ParsesStopped(Exception):
    """This process is stopping and killed the parse. Not the file's fault: the file was not read."""


class ParsePool:
    """This process's parse children: at most `parallel` at once; stop() kills the running ones.

    Thread-safe: any thread may run a parse (the upload checks, the job worker, the CLI).
    """

    def __init__(self) -> None:
        self.condition = threading.Condition()
        self.children: set[subprocess.Popen[bytes]] = set()
        self.stopped: set[subprocess.Popen[bytes]] = set()  # killed by stop(), not by a limit

    def start(self, parallel: int) -> subprocess.Popen[bytes]:
        """A new child once fewer than `parallel` run."""
        with self.condition:
            self.condition.wait_for(lambda: len(self.children) < parallel)
            # No DJQA_* variables: the child's limits come with its request, and the API key and the
            # store's and model's tokens stay out of reach of a parser bug a file might exploit.
            env = {key: value for key, value in os.environ.items() if not key.startswith("DJQA_")}
            child = subprocess.Popen(
                [sys.executable, "-c", CHILD_COMMAND],
                cwd=CHILD_CWD,
                env=env,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
            )
            self.children.add(child)
            return child

    def release(self, child: subprocess.Popen[bytes]) -> bool:
        """Forget a finished child; True when stop() killed it."""
        with self.condition:
            self.children.discard(child)
            self.condition.notify_all()
            stopped = child in self.stopped
            self.stopped.discard(child)
            return stopped

    def stop(self) -> None:
        """Kill every running parse; their callers get ParsesStopped. Later parses run as usual (a
        server stops its threads first; tests start several apps in one process)."""
        with self.condition:
            for child in self.children:
                child.kill()
                self.stopped.add(child)


POOL = ParsePool()  # one per process, like the cap it enforces


def stop_parses() -> None:
    """At shutdown: kill this process's running parse children (their callers get ParsesStopped)."""
    POOL.stop()


def cpu_message(name: str, limits: ProcessLimits) -> str:
    return (
        f"{name}：解析超过 {limits.cpu_seconds} 秒 CPU 时间的上限（DJQA_PARSE_CPU_SECONDS），"
        "文件可能过于复杂或含有大量无效内容"
    )


def run_limited(
    function: Callable[..., Any], args: tuple, limits: ProcessLimits, name: str, pool: ParsePool = POOL
) -> Any:
    """`function(*args)` in a child process of `pool` under `limits`: its result, or the exception it raised.

    Over a limit is ParseLimitExceeded (an OverLimit, naming the limit and its setting); a child that
    dies otherwise is a ReadError; ParsesStopped when the pool was stopped.
    """
    request = pickle.dumps((function, args, name, limits, os.getpid()))
    child = pool.start(limits.parallel)
    timed_out = False
    try:
        output, errors = child.communicate(request, timeout=limits.wall_seconds)
    except subprocess.TimeoutExpired:
        timed_out = True
        child.kill()
        output, errors = child.communicate()
    finally:
        stopped = pool.release(child)
    if stopped:
        raise ParsesStopped(f"{name}：服务正在停止，文件未读取")
    if timed_out:
        message = f"{name}：解析超过 {limits.wall_seconds:g} 秒的时限（DJQA_PARSE_WALL_SECONDS），文件可能过于复杂"
        raise ParseLimitExceeded(message)
    if child.returncode == 0:
        outcome, value = pickle.loads(output)
        if outcome == "error":
            raise value
        return value
    if child.returncode in (-signal.SIGXCPU, -signal.SIGKILL):  # the soft and the hard RLIMIT_CPU
        raise ParseLimitExceeded(cpu_message(name, limits))
    trace = errors[-2000:].decode(errors="replace")
    logger.warning("解析 %s 的子进程异常退出（%s）：%s", name, child.returncode, trace)
    raise ReadError(f"{name}：解析文件时出错，无法读取")


# --- the child ---------------------------------------------------------------------------------------


def lower_limit(kind: int, soft: int, hard: int) -> None:
    """Set a resource limit, never above the hard limit this process was given."""
    _, current_hard = resource.getrlimit(kind)
    if current_hard != resource.RLIM_INFINITY:
        soft, hard = min(soft, current_hard), min(hard, current_hard)
    resource.setrlimit(kind, (soft, hard))


def limit_self(limits: ProcessLimits, parent: int) -> None:
    """The child's own limits, set before it touches the file."""
    lower_limit(resource.RLIMIT_CORE, 0, 0)  # a killed parse must not write a core file of its heap
    # SIGXCPU at the soft limit ends the process; SIGKILL a second later if something caught it.
    lower_limit(resource.RLIMIT_CPU, limits.cpu_seconds, limits.cpu_seconds + 1)
    lower_limit(resource.RLIMIT_AS, limits.memory_bytes, limits.memory_bytes)
    os.nice(NICENESS)
    signal.alarm(math.ceil(limits.wall_seconds) + ORPHAN_GRACE_SECONDS)
    if sys.platform == "linux":
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent:  # the parent died before prctl: nobody waits for this parse
        os._exit(1)


def child_main() -> None:
    """Read the pickled call from stdin, limit this process, run it and write its outcome to stdout."""
    function, args, name, limits, parent = pickle.load(sys.stdin.buffer)
    limit_self(limits, parent)
    outcome: tuple[str, Any] | None = None
    try:
        outcome = ("ok", function(*args))
    except MemoryError:
        pass  # answered below: the frames holding the memory are freed once this block ends
    except ReadError as error:
        outcome = ("error", error.with_traceback(None))  # its frames may hold what filled the memory
        error.__cause__ = error.__context__ = None
    except Exception as error:  # a bug met on this file: the file is refused, the trace goes to the log
        logging.getLogger("dangjian_qa").exception("解析 %s 出错", name)
        outcome = ("error", ReadError(f"{name}：解析文件时出错（{type(error).__name__}），无法读取"))
    if outcome is None:
        limit = size_text(limits.memory_bytes)
        message = f"{name}：解析所需内存超过 {limit} 的上限（DJQA_PARSE_MEMORY_BYTES），文件可能过于复杂"
        outcome = ("error", ParseLimitExceeded(message))
    sys.stdout.buffer.write(pickle.dumps(outcome))
    sys.stdout.buffer.flush()
