"""Drive a command on a pseudo terminal as a user at a keyboard would: once its prompt (MARKER) shows,
type each --type argument in turn (escapes such as \\r and \\x10 understood, half a second apart),
then read until it ends (bounded). Prints repr(everything it printed), then `exit N`.

    pty_session.py [--marker '#'] [--timeout 30] --type 'tty; exit 5\\r' -- docker run -it busybox sh
"""

from __future__ import annotations

import argparse
import os
import pty
import select
import time


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--marker", default="#")
    parser.add_argument("--timeout", type=float, default=30.0)
    parser.add_argument("--type", dest="keys", action="append", default=[])
    parser.add_argument("argv", nargs="+")
    args = parser.parse_args()
    keys = [k.encode().decode("unicode_escape").encode("latin-1") for k in args.keys]
    pid, fd = pty.fork()
    if pid == 0:
        os.execvp(args.argv[0], args.argv)
    out = b""
    deadline = time.monotonic() + args.timeout
    sent = False
    while time.monotonic() < deadline:
        readable, _, _ = select.select([fd], [], [], 0.2)
        if readable:
            try:
                data = os.read(fd, 4096)
            except OSError:
                break
            if not data:
                break
            out += data
        if not sent and args.marker.encode() in out:
            for i, key in enumerate(keys):
                if i:
                    time.sleep(0.5)
                os.write(fd, key)
            sent = True
    _, status = os.waitpid(pid, 0)
    print(repr(out.decode(errors="replace")))
    print("exit", os.waitstatus_to_exitcode(status))


if __name__ == "__main__":
    main()
