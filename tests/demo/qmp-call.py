#!/usr/bin/env python3
"""Send one QMP command to a QEMU monitor socket and print its "return" as JSON.

Usage: qmp-call.py SOCKET COMMAND [ARGUMENTS-JSON]

A deliberately small helper for the demo (standard library only): it reads the greeting,
negotiates capabilities, sends the command with an "id", skips any events that arrive in
between and prints the matching reply's "return" value. A QMP error reply is printed on
stderr as "CLASS: desc" and the exit status is 1.
"""

import json
import socket
import sys


class QmpError(Exception):
    pass


class Qmp:
    def __init__(self, path):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(30)
        self.sock.connect(path)
        self.reader = self.sock.makefile("r", encoding="utf-8")
        self.next_id = 0
        greeting = self._read()
        if "QMP" not in greeting:
            raise QmpError("unexpected greeting: %r" % greeting)
        self.execute("qmp_capabilities")

    def _read(self):
        line = self.reader.readline()
        if not line:
            raise QmpError("QEMU closed the monitor connection")
        return json.loads(line)

    def execute(self, command, arguments=None):
        self.next_id += 1
        request = {"execute": command, "id": "demo-%d" % self.next_id}
        if arguments:
            request["arguments"] = arguments
        self.sock.sendall(json.dumps(request).encode("utf-8") + b"\n")
        while True:
            msg = self._read()
            if "event" in msg:
                continue  # events interleave with replies; the demo does not need them
            if msg.get("id") != request["id"]:
                continue
            if "error" in msg:
                err = msg["error"]
                raise QmpError("%s: %s" % (err.get("class"), err.get("desc")))
            return msg.get("return")

    def close(self):
        self.reader.close()
        self.sock.close()


def main(argv):
    if len(argv) not in (3, 4):
        sys.stderr.write(__doc__.split("\n\n")[1] + "\n")
        return 2
    arguments = json.loads(argv[3]) if len(argv) == 4 else None
    try:
        qmp = Qmp(argv[1])
        try:
            result = qmp.execute(argv[2], arguments)
        finally:
            qmp.close()
    except (OSError, ValueError, QmpError) as exc:
        sys.stderr.write("qmp-call: %s: %s\n" % (argv[2], exc))
        return 1
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
