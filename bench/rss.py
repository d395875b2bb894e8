"""Runs a command and reports its peak RSS: `os.wait4` gives the child's own rusage (not
the maximum over every child so far, as RUSAGE_CHILDREN would)."""
import os
import subprocess
import tempfile
import time


def run(args, env=None):
    """(returncode, stdout, stderr, seconds, peak RSS in MiB) of `args`."""
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        t0 = time.perf_counter()
        p = subprocess.Popen(args, env=env, stdout=out, stderr=err, text=True)
        _, status, usage = os.wait4(p.pid, 0)
        seconds = time.perf_counter() - t0
        p.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        # ru_maxrss is in KiB on Linux.
        return p.returncode, out.read(), err.read(), seconds, usage.ru_maxrss / 1024
