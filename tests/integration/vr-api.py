#!/usr/bin/env python3
# vr-api.py SOCKET METHOD PATH [BODY]: one request to virt-replicad's local API (HTTP on a
# unix socket, docs/api.md) for the test scripts. Prints the status on the first line, then
# the body. A JSON BODY is sent with Content-Type application/json. Exit status 0 whenever
# an answer came; 1 (with the reason on stderr) when none did.
#
# SPDX-License-Identifier: LGPL-2.1-or-later
import http.client
import socket
import sys


class UnixConnection(http.client.HTTPConnection):
    def __init__(self, path, timeout):
        super().__init__("localhost", timeout=timeout)
        self.unix_path = path

    def connect(self):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(self.timeout)
        self.sock.connect(self.unix_path)


def main():
    if len(sys.argv) not in (4, 5):
        sys.exit("usage: vr-api.py SOCKET METHOD PATH [BODY]")
    body = sys.argv[4].encode() if len(sys.argv) == 5 else None
    conn = UnixConnection(sys.argv[1], timeout=600)
    try:
        conn.request(sys.argv[2], sys.argv[3], body=body,
                     headers={"Content-Type": "application/json"} if body else {})
        reply = conn.getresponse()
        data = reply.read().decode()
    except (OSError, http.client.HTTPException) as e:
        sys.exit(f"vr-api.py: {sys.argv[2]} {sys.argv[3]}: no answer: {e!r}")
    print(reply.status)
    print(data)


main()
