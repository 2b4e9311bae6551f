"""A relay split over two processes joined by a unix stream socket.
`take` listens on LHOST:LPORT and passes each client to the unix socket;
`dial` serves the unix socket and dials THOST:TPORT for each connection.
A NAME starting with a backslash and 0 is an abstract socket.
Usage: unix_split.py take NAME LHOST LPORT | dial NAME THOST TPORT"""
import socket
import sys
import threading

mode, name, host, port = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
if name.startswith("\\0"):
    name = "\0" + name[2:]


def pump(a, b):
    while True:
        d = a.recv(65536)
        if not d:
            break
        b.sendall(d)
    try:
        b.shutdown(socket.SHUT_WR)
    except OSError:
        pass


def join(a, b):
    threading.Thread(target=pump, args=(a, b), daemon=True).start()
    threading.Thread(target=pump, args=(b, a), daemon=True).start()


if mode == "take":
    s = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((host, port))
    s.listen(8)
    while True:
        c, _ = s.accept()
        u = socket.socket(socket.AF_UNIX)
        u.connect(name)
        join(c, u)
else:
    s = socket.socket(socket.AF_UNIX)
    s.bind(name)
    s.listen(8)
    while True:
        u, _ = s.accept()
        t = socket.create_connection((host, port))
        join(u, t)
