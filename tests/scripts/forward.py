"""A port forward in a few lines: LHOST:LPORT to THOST:TPORT. With
`splice`, the bytes move through a pipe with os.splice and never enter
the process.
Usage: forward.py LHOST LPORT THOST TPORT [splice]"""
import os
import socket
import sys
import threading

lhost, lport, thost, tport = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4])
use_splice = len(sys.argv) > 5 and sys.argv[5] == "splice"


def pump(a, b):
    if use_splice:
        r, w = os.pipe()
        while True:
            n = os.splice(a.fileno(), w, 65536)
            if n == 0:
                break
            while n:
                n -= os.splice(r, b.fileno(), n)
    else:
        while True:
            d = a.recv(65536)
            if not d:
                break
            b.sendall(d)
    try:
        b.shutdown(socket.SHUT_WR)
    except OSError:
        pass


s = socket.socket(socket.AF_INET6 if ":" in lhost else socket.AF_INET)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((lhost, lport))
s.listen(8)
while True:
    c, _ = s.accept()
    u = socket.create_connection((thost, tport))
    threading.Thread(target=pump, args=(c, u), daemon=True).start()
    threading.Thread(target=pump, args=(u, c), daemon=True).start()
