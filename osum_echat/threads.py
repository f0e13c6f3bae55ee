"""How many CPU threads torch uses, decided in one place from the cores this process may really use.

Every CLI calls `configure()` first thing, before torch is imported (bin/train, infer, extract,
chat, serve, token2wav, demo_web):

- count: `OMP_NUM_THREADS` when set (respected as given); else the CPUs this process may run on
  (`os.sched_getaffinity`), capped by the cgroup's CPU quota (`/sys/fs/cgroup/cpu.max`, or
  cgroup v1's cpu.cfs_quota_us / cpu.cfs_period_us), rounded up. `os.cpu_count()` counts the
  host's cores, which in a container or under taskset can be many more than the job may use.
- waiting: `OMP_WAIT_POLICY=PASSIVE` (and `KMP_BLOCKTIME=0` for Intel OpenMP builds) unless set
  (or unless `GOMP_SPINCOUNT` is: a spin count of your own choosing).
  torch's CPU wheel runs its parallel regions on GNU OpenMP (libgomp), whose idle threads spin
  for a while before they sleep. On a CPU shared with another busy process, a thread spinning at
  the end of one region holds the core its sibling needs to finish it: every small op then waits
  for a scheduler time slice. Measured on the demo's stage 1 (docs/troubleshooting.md,
  "Shared CPU"): beside one busy process the spinning default kept ~11% of the quiet rate.
  Both knobs are read once, when the OpenMP runtime starts (at `import torch`), hence here.

`configure()` returns the count and exports it (OMP_NUM_THREADS, MKL_NUM_THREADS), so the
processes a job starts (dataloader workers, torchrun's ranks) inherit the same decision.
`OSUM_OMP_WAIT=spin` keeps OpenMP's spin-waiting (a dedicated machine, for the last few %).
"""
from __future__ import annotations

import math
import os
import sys

QUOTA_FILES = ("/sys/fs/cgroup/cpu.max",)  # cgroup v2: "<quota|max> <period>"
QUOTA_FILES_V1 = ("/sys/fs/cgroup/cpu/cpu.cfs_quota_us", "/sys/fs/cgroup/cpu/cpu.cfs_period_us")
WAIT_ENV = {"OMP_WAIT_POLICY": "PASSIVE", "KMP_BLOCKTIME": "0"}


def affinity_cpus() -> int:
    """CPUs this process may be scheduled on (taskset, cpusets); os.cpu_count() where unknown."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # not Linux
        return max(1, os.cpu_count() or 1)


def cgroup_quota_cpus(quota_files=QUOTA_FILES, v1_files=QUOTA_FILES_V1) -> float | None:
    """The cgroup's CPU quota in CPUs (2.5 for "250000 100000"); None when unlimited or unknown."""
    for path in quota_files:
        try:
            quota, period = open(path, encoding="ascii").read().split()[:2]
        except (OSError, ValueError):
            continue
        if quota != "max" and float(period) > 0:
            return float(quota) / float(period)
        return None
    try:
        quota, period = (int(open(p, encoding="ascii").read().strip()) for p in v1_files)
    except (OSError, ValueError):
        return None
    return quota / period if quota > 0 and period > 0 else None


def available_cpus() -> int:
    """CPUs this process may use: its affinity, capped by the cgroup quota (rounded up)."""
    n = affinity_cpus()
    quota = cgroup_quota_cpus()
    if quota is not None:
        n = min(n, max(1, math.ceil(quota - 1e-9)))
    return n


def _env_int(name: str) -> int | None:
    value = os.environ.get(name, "").strip()
    if not value:
        return None
    try:
        n = int(value)
    except ValueError:
        raise SystemExit(f"error: {name}={value!r} is not a whole number of threads") from None
    if n < 1:
        raise SystemExit(f"error: {name}={value!r}: give at least 1 thread")
    return n


def decide() -> tuple[int, str]:
    """(threads, where the number came from)."""
    n = _env_int("OMP_NUM_THREADS")
    if n is not None:
        return n, "OMP_NUM_THREADS"
    quota = cgroup_quota_cpus()
    n = available_cpus()
    return n, f"{affinity_cpus()} usable CPUs" + (f", cgroup quota {quota:g}" if quota is not None else "")


def configure(threads: int | None = None) -> int:
    """Decide the thread count (`threads` overrides) and the OpenMP wait policy and export them;
    call before `import torch`: torch reads both when it starts. Once torch is imported only an
    explicit `threads` changes its count (the importer chose its own); the environment still
    goes to the processes started later. Returns the count."""
    n, source = (threads, "argument") if threads else decide()
    if os.environ.get("OSUM_OMP_WAIT", "").lower() != "spin" and "GOMP_SPINCOUNT" not in os.environ:
        for name, value in WAIT_ENV.items():
            os.environ.setdefault(name, value)
    os.environ["OMP_NUM_THREADS"] = str(n)
    os.environ.setdefault("MKL_NUM_THREADS", str(n))
    torch = sys.modules.get("torch")
    if torch is not None and threads:  # imported by the caller, who chose its threads unless told here
        torch.set_num_threads(n)
    os.environ["OSUM_THREADS_DECIDED"] = f"{n} ({source})"
    return n


def describe() -> str:
    """One line for logs: the count, where it came from, the OpenMP wait policy."""
    decided = os.environ.get("OSUM_THREADS_DECIDED") or f"{decide()[0]} (not configured)"
    return f"torch threads {decided}, OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', 'unset (spin)')}"
