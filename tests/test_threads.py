"""Thread count from the cores a process may use (affinity, cgroup quota, OMP_NUM_THREADS) and
OpenMP's passive waiting, set before torch starts (osum_echat/threads.py)."""
import os
import subprocess
import sys

from osum_echat import threads

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PROBE = ("import os, osum_echat.bin, torch; "
         "print(torch.get_num_threads(), os.environ['OMP_WAIT_POLICY'], os.environ['OMP_NUM_THREADS'])")


def probe(env_extra, cpus=None):
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "OMP_WAIT_POLICY", "MKL_NUM_THREADS")}
    env.update(env_extra, PYTHONPATH=REPO)
    r = subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, timeout=120,
                       preexec_fn=(lambda: os.sched_setaffinity(0, cpus)) if cpus else None)
    assert r.returncode == 0, r.stderr
    return r.stdout.split()


def test_cgroup_quota_v2_and_v1(tmp_path):
    v2 = tmp_path / "cpu.max"
    v2.write_text("250000 100000\n")
    assert threads.cgroup_quota_cpus([str(v2)]) == 2.5
    v2.write_text("max 100000\n")
    assert threads.cgroup_quota_cpus([str(v2)]) is None
    quota, period = tmp_path / "q", tmp_path / "p"
    quota.write_text("50000\n"), period.write_text("100000\n")
    assert threads.cgroup_quota_cpus([str(tmp_path / "absent")], (str(quota), str(period))) == 0.5
    quota.write_text("-1\n")
    assert threads.cgroup_quota_cpus([str(tmp_path / "absent")], (str(quota), str(period))) is None


def test_quota_caps_the_affinity(monkeypatch):
    monkeypatch.setattr(threads, "affinity_cpus", lambda: 8)
    monkeypatch.setattr(threads, "cgroup_quota_cpus", lambda: 2.5)
    assert threads.available_cpus() == 3
    monkeypatch.setattr(threads, "cgroup_quota_cpus", lambda: 0.2)
    assert threads.available_cpus() == 1
    monkeypatch.setattr(threads, "cgroup_quota_cpus", lambda: None)
    assert threads.available_cpus() == 8


def test_cli_import_sets_passive_waiting_and_respects_omp_num_threads():
    assert probe({"OMP_NUM_THREADS": "1"}) == ["1", "PASSIVE", "1"]
    assert probe({"OMP_NUM_THREADS": "1", "OMP_WAIT_POLICY": "ACTIVE"}) == ["1", "ACTIVE", "1"]
    assert probe({"OMP_NUM_THREADS": "1", "OSUM_OMP_WAIT": "spin", "OMP_WAIT_POLICY": "unset"})[1] == "unset"


def test_count_follows_the_cpus_the_process_may_use():
    """Pinned to one CPU (as taskset -c N does) on a machine of several: one thread."""
    assert probe({}, cpus={sorted(os.sched_getaffinity(0))[0]}) == ["1", "PASSIVE", "1"]


def test_a_bad_omp_num_threads_is_one_clear_line():
    env = {**os.environ, "OMP_NUM_THREADS": "two", "PYTHONPATH": REPO}
    r = subprocess.run([sys.executable, "-c", "import osum_echat.bin"], env=env, capture_output=True, text=True)
    assert r.returncode != 0 and "OMP_NUM_THREADS='two' is not a whole number of threads" in r.stderr
