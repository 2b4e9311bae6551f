"""A server for relay tests: for each connection (or datagram), reads one
request and answers DOWN bytes, then keeps the connection open HOLD
seconds before closing it.
Usage: short_target.py PROTO BIND PORT DOWN HOLD [http]
PROTO is tcp or udp; with `http` the answer is an HTTP/1.0 response whose
body makes DOWN bytes in all."""
import socket
import sys
import threading
import time

proto, bind, port, down, hold = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), float(sys.argv[5])
http = len(sys.argv) > 6 and sys.argv[6] == "http"
family = socket.AF_INET6 if ":" in bind else socket.AF_INET


def answer():
    if not http:
        return b"d" * down
    head = b"HTTP/1.0 200 OK\r\nContent-Length: %d\r\n\r\n"
    body = down - len(head % 0)
    return (head % body) + b"d" * body


if proto == "udp":
    s = socket.socket(family, socket.SOCK_DGRAM)
    s.bind((bind, port))
    while True:
        _, peer = s.recvfrom(65536)
        s.sendto(b"d" * down, peer)

s = socket.socket(family)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((bind, port))
s.listen(16)


def serve(c):
    if c.recv(65536):
        c.sendall(answer())
        time.sleep(hold)
    c.close()


while True:
    conn, _ = s.accept()
    threading.Thread(target=serve, args=(conn,), daemon=True).start()
