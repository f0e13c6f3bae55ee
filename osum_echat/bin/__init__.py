# Every CLI (python -m osum_echat.bin.X) decides its CPU threads here, before its module imports
# torch: the OpenMP wait policy is read only when torch's OpenMP runtime starts (osum_echat/threads.py).
from osum_echat.threads import configure as _configure_threads

_configure_threads()
