"""An app for `mesh.control.apps`' tests: `python -m tests.support.forked_app MODE`.

It reports what it was given (argv, working directory, one environment variable) on
stdout, starts a thread, registers an exit handler, and then, by MODE: `exit` ends with
a message (exit code 1), `serve` sleeps until a signal ends it.
"""

import atexit
import os
import sys
import threading
import time

print(f"argv={sys.argv[1:]} cwd={os.getcwd()} marker={os.environ.get('FORKED_APP_MARKER')}")
atexit.register(print, "exit handler ran", flush=True)
threading.Thread(target=time.sleep, args=(30,), daemon=True).start()
print("started", flush=True)
if sys.argv[1] == "exit":
    raise SystemExit("forked_app: asked to exit")
time.sleep(30)
