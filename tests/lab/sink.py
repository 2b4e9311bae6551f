"""The lab's relay target: for each connection, reads UP bytes (or until the
client stops sending), then answers DOWN bytes. Usage: sink.py ADDR PORT"""
import socket
import sys
import threading

UP, DOWN = 40_000, 100_000


def serve(c):
    with c:
        n = 0
        while n < UP:
            d = c.recv(65536)
            if not d:
                return
            n += len(d)
        c.sendall(b"d" * DOWN)


s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((sys.argv[1], int(sys.argv[2])))
s.listen(16)
while True:
    conn, _ = s.accept()
    threading.Thread(target=serve, args=(conn,), daemon=True).start()
