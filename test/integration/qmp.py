#!/usr/bin/env python3
"""A minimal QMP client for the migration tests (copied into the guests): qmp.py SOCKET [CMD_JSON...]
(no commands given: one per line on stdin).
Runs qmp_capabilities, then each command in order; prints the list of their answers as JSON
(asynchronous events skipped). Exit 1 if any command answered with an error."""
import json
import socket
import sys
import time


def main() -> int:
    sock = socket.socket(socket.AF_UNIX)
    for _ in range(200):
        try:
            sock.connect(sys.argv[1])
            break
        except OSError:
            time.sleep(0.05)
    else:
        print(f"cannot connect to {sys.argv[1]}", file=sys.stderr)
        return 2
    f = sock.makefile("rw")
    json.loads(f.readline())  # greeting
    answers = []
    commands = sys.argv[2:] or [line for line in sys.stdin.read().splitlines() if line.strip()]
    for cmd in ['{"execute": "qmp_capabilities"}'] + commands:
        f.write(cmd + "\n")
        f.flush()
        while True:
            line = f.readline()
            if not line:
                print("qemu closed the monitor", file=sys.stderr)
                return 2
            answer = json.loads(line)
            if "event" not in answer:
                break
        answers.append(answer)
    print(json.dumps(answers[1:]))
    return 1 if any("error" in a for a in answers) else 0


sys.exit(main())
