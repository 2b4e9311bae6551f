"""A tunnel inside an HTTP connection, both ends: the client sends one
HTTP request asking to switch protocols, and once answered goes on with
short binary messages both ways on the same connection; the server
answers 101 and then answers each message. With `keepalive`, the client
instead sends N ordinary requests on the connection (a look-alike).
Usage: http_tunnel.py server BIND PORT | http_tunnel.py client HOST PORT N [keepalive]"""
import socket
import sys
import threading
import time

if sys.argv[1] == "server":
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((sys.argv[2], int(sys.argv[3])))
    s.listen(8)

    def serve(c):
        buf = b""
        while True:
            d = c.recv(65536)
            if not d:
                return
            buf += d
            while b"\r\n\r\n" in buf:
                head, buf = buf.split(b"\r\n\r\n", 1)
                if b"Upgrade:" in head:
                    c.sendall(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n")
                    while True:
                        m = c.recv(65536)
                        if not m:
                            return
                        c.sendall(b"\x82" + bytes([len(m) % 120]) + m[::-1] + b"$ ")
                body = b"ok\n"
                c.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(body) + body)

    while True:
        conn, _ = s.accept()
        threading.Thread(target=serve, args=(conn,), daemon=True).start()

host, port, n = sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
keepalive = len(sys.argv) > 5 and sys.argv[5] == "keepalive"
c = socket.create_connection((host, port), timeout=10)
if keepalive:
    for i in range(n):
        c.sendall(b"GET /status/%d HTTP/1.1\r\nHost: %s\r\n\r\n" % (i, host.encode()))
        c.recv(65536)
        time.sleep(0.2)
    print(n, flush=True)
    sys.exit(0)
c.sendall(b"GET /ws HTTP/1.1\r\nHost: %s\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n" % host.encode())
c.recv(65536)
for i in range(n):
    c.sendall(b"\x82\x86" + b"ls -la"[: 3 + i % 4])
    c.recv(65536)
    time.sleep(0.3)
print(n, flush=True)
