"""A command for tests/test_forkserver.py: prints what a process knows of how it was started, then exits 3."""

import atexit
import json
import os
import random
import sys
import threading
import time

import numpy as np

if sys.argv[1:] == ["raise"]:
    raise ValueError("an uncaught error")
if sys.argv[1:] == ["interrupt"]:
    raise KeyboardInterrupt
atexit.register(lambda: print("atexit ran", file=sys.stderr))
threading.Thread(target=lambda: (time.sleep(0.2), print("thread done", file=sys.stderr))).start()
facts = {
    "argv": sys.argv,
    "cwd": os.getcwd(),
    "path0": sys.path[0],
    "env": os.environ.get("PROBE"),
    "name": __name__,
    "spec": __spec__.name,
    "main": sys.modules["__main__"].__spec__.name,
    "pid": os.getpid(),
    "random": random.random(),
    "np_random": float(np.random.random()),  # noqa: NPY002  (the global state is the point)
}
print(json.dumps(facts))
print("to stderr", file=sys.stderr)
sys.exit(3)
