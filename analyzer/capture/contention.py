"""Other processes' use of the CPU while convdoctor times: read from /proc around every block of rounds, waited out
before the next block, the block redone, or the measurement marked unreliable.

A benchmark on N threads needs N cores. What other processes run on the cores it does not use costs it little;
what they run on its own cores preempts its threads (an OpenMP team waits at every barrier for its slowest
thread), and does so unevenly between the two variants of a round. Only that part counts: the other processes'
busy cores beyond the cores the benchmark leaves free.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from typing import Callable

# Other processes' load on the benchmark's own cores above this share of each core it uses makes a block
# contended: beside a loop kept busy up to half of the time (read as 0.03-0.29 cores on 2 threads) small_cnn's
# channels_last interval overlapped its quiet one in 8 of 8 runs; beside one or two whole loops (0.8-1.1 cores
# read) 2 of 4 missed it, at 0.68x and 0.69x against 1.14-1.28x (benchmarks/CONTENTION.md).
BUSY_PER_CORE = 0.25
SAMPLE_S = 1.0  # one reading of the machine while waiting for quiet
WAIT_NOTE_EVERY_S = 10.0  # while waiting, the progress line repeats what it waits for this often
MAX_REDONE_BLOCKS = 6  # per measurement: a machine that turns busy again and again ends the waiting
BUSIEST_SHOWN = 3

Pids = tuple[int | str, ...]


def cpu_jiffies(pids: Pids = ("self",)) -> tuple[int, int] | None:
    """(busy clock ticks of the whole machine, clock ticks of the given processes) from /proc; None without /proc."""
    try:
        with open("/proc/stat", encoding="ascii") as stat:
            ticks = [int(v) for v in stat.readline().split()[1:9]]
        own = sum(_process_ticks(pid) for pid in pids)
        idle = ticks[3] + ticks[4]  # idle + iowait
        return sum(ticks) - idle, own
    except (OSError, ValueError, IndexError):
        return None


def _process_ticks(pid: int | str) -> int:
    with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as process:
        fields = process.read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])  # utime + stime


def own_processes() -> Pids:
    """This process and its descendants (worker processes, torch.compile's compile workers): the measured work,
    never "other processes"."""
    table = _process_table()
    return tuple(sorted(_descendants(os.getpid(), table))) if table else ("self",)


def other_cores_busy(before: tuple[int, int] | None, after: tuple[int, int] | None, wall_s: float) -> float | None:
    """Cores that processes other than the measured ones kept busy, on average, between two cpu_jiffies()."""
    if before is None or after is None or wall_s <= 0:
        return None
    others = (after[0] - before[0]) - (after[1] - before[1])
    return max(others, 0) / os.sysconf("SC_CLK_TCK") / wall_s


def tick_margin(wall_s: float, processes: int) -> float:
    """The cores a reading over ``wall_s`` may overstate others' load by: /proc counts CPU time in clock ticks, the
    machine's total to within a tick per core and each measured process's to within one. Over a 1 s block that is
    a few hundredths of a core; over a 3 ms block, several cores (a lone tick of anyone's would look like
    contention)."""
    ticks = (os.cpu_count() or 1) + processes
    return ticks / os.sysconf("SC_CLK_TCK") / max(wall_s, 1e-3)


def time_weighted_busy(blocks: list[tuple[float, float | None]]) -> float | None:
    """Other cores busy over several blocks, from each block's (wall seconds, other_cores_busy), weighted by its
    time; None when no block knows."""
    known = [(wall, busy) for wall, busy in blocks if busy is not None]
    total = sum(wall for wall, _ in known)
    return sum(wall * busy for wall, busy in known) / total if known and total > 0 else None


def usable_cores() -> int:
    """The cores this process may run on (its affinity), not every core of the machine."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def contended(others_busy: float | None, threads: int, cores: int | None = None) -> bool:
    """Whether other processes kept the benchmark's own cores busy beyond BUSY_PER_CORE of each: their busy cores
    less the cores the benchmark's ``threads`` leave free. Unknown load (no /proc) is not contention."""
    if others_busy is None:
        return False
    free = max((cores or usable_cores()) - threads, 0)
    return others_busy - free > BUSY_PER_CORE * threads


@dataclass(frozen=True)
class BusyProcess:
    """Another process and the cores it kept busy over a reading."""

    pid: int
    name: str
    cores: float


@dataclass(frozen=True)
class MachineReading:
    """What other processes used over a window of wall time."""

    others_busy: float  # cores, on average
    busiest: tuple[BusyProcess, ...]  # the busiest of them, most first

    def describe(self) -> str:
        """``1.8 cores (python3 spin.py 1.0, chromium 0.6)``."""
        names = ", ".join(f"{p.name} {p.cores:.1f}" for p in self.busiest)
        return f"{self.others_busy:.1f} cores" + (f" ({names})" if names else "")


def read_machine(window_s: float = SAMPLE_S) -> MachineReading | None:
    """Other processes' busy cores over ``window_s``, and the busiest of them by name; this process and its
    descendants (worker and compile processes) are not others. None without /proc."""
    first, started = _process_table(), time.perf_counter()
    machine_before = cpu_jiffies(())
    time.sleep(window_s)
    second, machine_after = _process_table(), cpu_jiffies(())
    wall = time.perf_counter() - started
    if machine_before is None or machine_after is None or not second:
        return None
    own = _descendants(os.getpid(), second)
    hz = os.sysconf("SC_CLK_TCK")
    used = {pid: (ticks - first[pid][1]) / hz / wall for pid, (_, ticks, _) in second.items() if pid in first}
    own_cores = sum(cores for pid, cores in used.items() if pid in own)
    others = max((machine_after[0] - machine_before[0]) / hz / wall - own_cores, 0.0)
    busiest = sorted(((pid, cores) for pid, cores in used.items() if pid not in own and cores >= 0.05),
                     key=lambda item: -item[1])[:BUSIEST_SHOWN]
    return MachineReading(others, tuple(BusyProcess(pid, _process_name(pid, second[pid][2]), cores)
                                        for pid, cores in busiest))


def _process_table() -> dict[int, tuple[int, int, str]]:
    """Every process's (parent pid, utime + stime ticks, command name) from /proc."""
    table: dict[int, tuple[int, int, str]] = {}
    try:
        entries = os.listdir("/proc")
    except OSError:
        return table
    for entry in entries:
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", encoding="ascii", errors="replace") as stat:
                text = stat.read()
        except OSError:  # it ended meanwhile
            continue
        name = text[text.find("(") + 1:text.rfind(")")]
        fields = text.rsplit(")", 1)[1].split()
        table[int(entry)] = (int(fields[1]), int(fields[11]) + int(fields[12]), name)
    return table


def _descendants(root: int, table: dict[int, tuple[int, int, str]]) -> set[int]:
    children: dict[int, list[int]] = {}
    for pid, (parent, _, _) in table.items():
        children.setdefault(parent, []).append(pid)
    found, todo = {root}, [root]
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


def _process_name(pid: int, command: str) -> str:
    """The command and its first argument (``python3 spin.py``, ``python -m module``), or the kernel's command
    name."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as cmdline:
            argv = [os.path.basename(a.decode(errors="replace")) for a in cmdline.read().split(b"\0") if a]
    except OSError:
        argv = []
    words = argv[:3] if len(argv) > 2 and argv[1] == "-m" else argv[:2]  # python spin.py, python -m pkg.mod
    return (" ".join(words) or command)[:60]


@dataclass
class QuietPolicy:
    """One run's rule for busy machines: before a block that follows a contended one, wait (at most ``wait_s``
    over the whole run) until other processes leave the benchmark's cores; a block taken under contention is
    redone when the wait ended in quiet, and kept, marking its measurement unreliable, when it did not.

    ``say`` receives the progress line's text while waiting.
    """

    wait_s: float = 0.0
    threads: int = 1
    say: Callable[[str], None] | None = None
    waited_s: float = 0.0
    worst: MachineReading | None = None  # the busiest reading taken while waiting in vain
    _last_contended: bool = field(default=False, repr=False)

    @property
    def wait_left_s(self) -> float:
        return max(self.wait_s - self.waited_s, 0.0)

    def is_contended(self, others_busy: float | None) -> bool:
        return contended(others_busy, self.threads)

    def note_block(self, others_busy: float | None, margin: float = 0.0) -> bool:
        """A block's reading, and the cores it may overstate others' load by (``tick_margin``); whether the block
        was contended beyond that doubt."""
        self._last_contended = self.is_contended(None if others_busy is None else others_busy - margin)
        return self._last_contended

    def wait_for_quiet(self, what: str = "the next block of rounds") -> bool:
        """After a contended block: ``settle``; otherwise nothing to wait for."""
        return not self._last_contended or self.settle(what)

    def settle(self, what: str) -> bool:
        """Read the machine each SAMPLE_S until the benchmark's cores are free or the run's wait runs out; whether
        they are free. Once the wait has run out a busy machine is not read again."""
        noted = -WAIT_NOTE_EVERY_S
        started = time.perf_counter()
        while True:
            if self.wait_left_s <= 0 and self.worst is not None:
                self._last_contended = True
                return False
            reading = read_machine()
            if reading is None or not self.is_contended(reading.others_busy):
                self._last_contended = False
                return True
            if self.worst is None or reading.others_busy > self.worst.others_busy:
                self.worst = reading
            if self.wait_left_s <= 0:
                self._last_contended = True
                return False
            waited = time.perf_counter() - started
            if self.say is not None and waited - noted >= WAIT_NOTE_EVERY_S:
                noted = waited
                self.say(f"waiting for quiet before {what}: other processes keep {reading.describe()} busy on "
                         f"{usable_cores()} cores, {self.threads} of which the timing needs; "
                         f"up to {self.wait_left_s:.0f} s more (--wait-quiet)")
            self.waited_s += SAMPLE_S  # the next reading is time spent waiting
