"""What the bench reads from /proc: the memory of the worker's processes and the CPU time of the
web server, the worker and PostgreSQL (the bench runs on the database's machine)."""
import os
import threading

TICK = os.sysconf("SC_CLK_TCK")


def tree(root):
    """`root` and its descendants (live ones), root first. Children are listed per thread that
    forked them (billiard's pool forks replacements from a supervisor thread)."""
    pids, todo = [], [root]
    while todo:
        pid = todo.pop()
        pids.append(pid)
        try:
            threads = os.listdir(f"/proc/{pid}/task")
        except OSError:
            continue
        for thread in threads:
            try:
                with open(f"/proc/{pid}/task/{thread}/children") as handle:
                    todo += [int(p) for p in handle.read().split()]
            except OSError:
                pass
    return pids


class RssSampler(threading.Thread):
    """Peak RSS of a process tree (the Celery worker and its pool), from /proc every 100 ms:
    over the whole run, and within windows opened and closed around a phase."""

    def __init__(self, pid, interval=0.1):
        super().__init__(name="rss-sampler", daemon=True)
        self.pid, self.interval = pid, interval
        self.peak_total = self.peak_pss = self.peak_pool = 0
        self.peaks = {}  # pid -> (peak kB, name)
        self.windows = {}  # name -> peak kB of the tree's total since the window opened
        self.halt = threading.Event()

    def open_window(self, name):
        self.windows[name] = self.total_kb()

    def close_window(self, name):
        """The window's peak total RSS, in kB (one more sample taken now)."""
        return max(self.windows.pop(name), self.total_kb())

    def total_kb(self):
        return sum(_rss_kb(pid) or 0 for pid in tree(self.pid))

    def run(self):
        rounds = 0
        while not self.halt.wait(self.interval):
            total = 0
            pids = tree(self.pid)
            rounds += 1
            if rounds % 10 == 1:  # PSS once a second: reading smaps walks the page tables
                self.peak_pss = max(self.peak_pss, sum(_pss_kb(pid) or 0 for pid in pids))
            pool = 0
            for pid in pids:
                kb = _rss_kb(pid)
                if kb is None:
                    continue
                total += kb
                pool += kb if pid != self.pid else 0
                if kb > self.peaks.get(pid, (0, ""))[0]:
                    self.peaks[pid] = (kb, _proc_name(pid))
            self.peak_total = max(self.peak_total, total)
            self.peak_pool = max(self.peak_pool, pool)
            for name, peak in list(self.windows.items()):
                if total > peak:
                    self.windows[name] = total


def _rss_kb(pid):
    try:
        with open(f"/proc/{pid}/status") as handle:
            for line in handle:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except (OSError, ValueError):
        return None
    return None


def _pss_kb(pid):
    try:
        with open(f"/proc/{pid}/smaps_rollup") as handle:
            for line in handle:
                if line.startswith("Pss:"):
                    return int(line.split()[1])
    except (OSError, ValueError):
        return None
    return None


def _proc_name(pid):
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as handle:
            argv = handle.read().split(b"\0")
        text = " ".join(a.decode(errors="replace") for a in argv if a)
        return text[:60]
    except OSError:
        return "?"


def _stat(pid):
    """(utime, stime, cutime, cstime) in clock ticks, or None when the process is gone."""
    try:
        with open(f"/proc/{pid}/stat") as handle:
            fields = handle.read().rsplit(")", 1)[1].split()
        return tuple(int(value) for value in fields[11:15])
    except (OSError, IndexError, ValueError):
        return None


def tree_ticks(root):
    """CPU ticks a process tree has used since its root started: every live process's own
    time plus what its exited, reaped children used (cutime, cstime) — so a PostgreSQL backend
    or a pool process that ends between two readings still counts, in its parent's figures."""
    total = 0
    for pid in tree(root):
        times = _stat(pid)
        if times is not None:
            total += sum(times)
    return total


def own_ticks(pid):
    times = _stat(pid)
    return 0 if times is None else times[0] + times[1]


def postmasters():
    """The PostgreSQL server processes at the root of their clusters on this machine (a
    `postgres` whose parent is not one)."""
    names = {}
    parents = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as handle:
                raw = handle.read()
        except OSError:
            continue
        names[int(entry)] = raw[raw.find("(") + 1:raw.rfind(")")]
        parents[int(entry)] = int(raw.rsplit(")", 1)[1].split()[1])
    return [pid for pid, name in names.items()
            if name == "postgres" and names.get(parents[pid]) != "postgres"]


def database_backends(db_name):
    """Local PostgreSQL backends serving `db_name` (their process title names the database)."""
    found = []
    for root in postmasters():
        for pid in tree(root):
            try:
                with open(f"/proc/{pid}/cmdline", "rb") as handle:
                    title = handle.read().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            if title.startswith("postgres:") and f" {db_name} " in title:
                found.append(pid)
    return found


class CpuMeter:
    """CPU seconds (user + system) used between two snapshots by the web server (gunicorn's
    master and workers), the Celery worker (all its processes), PostgreSQL (every server
    process: backends, WAL writer, checkpointer, autovacuum — of the whole server, so other
    databases' work on it counts too) and this process. Unlike latencies, CPU per order
    hardly depends on what else runs on the machine."""

    def __init__(self, children, db_name=None):
        self.children, self.db_name = children, db_name
        self.postgres = postmasters() if db_name else []

    def snapshot(self):
        taken = {"web": tree_ticks(self.children.processes["gunicorn"].pid),
                 "worker": tree_ticks(self.children.processes["celery worker"].pid),
                 "bench": own_ticks(os.getpid())}
        if self.db_name:
            taken["postgres"] = sum(tree_ticks(pid) for pid in self.postgres)
            taken["of which bench db backends"] = {
                pid: own_ticks(pid) for pid in database_backends(self.db_name)}
        return taken

    def since(self, before):
        """{group: seconds} since the snapshot `before`."""
        after = self.snapshot()
        spent = {}
        for group, ticks in after.items():
            if isinstance(ticks, dict):  # per backend: those alive at the end
                old = before.get(group, {})
                spent[group] = sum(t - old.get(pid, 0) for pid, t in ticks.items()) / TICK
            else:
                spent[group] = (ticks - before.get(group, 0)) / TICK
        return spent

    @staticmethod
    def serving(spent):
        """Seconds of the servers: web + worker + PostgreSQL (not the bench's own process)."""
        return sum(spent.get(group, 0) for group in ("web", "worker", "postgres"))

    @staticmethod
    def describe(spent, count, unit="order"):
        parts = [f"{group} {seconds / count * 1000:.1f}" for group, seconds in spent.items()]
        return f"CPU ms per {unit}: " + ", ".join(parts)
