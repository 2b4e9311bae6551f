"""The lab's relay client: connects to PROXY_HOST:PROXY_PORT directly
(plain) or through SOCKS4, SOCKS4a, SOCKS5 or HTTP CONNECT to TARGET:PORT,
sends 40,000 bytes and reads the 100,000-byte answer of sink.py.
Usage: relay_client.py MODE PROXY_HOST PROXY_PORT TARGET PORT"""
import socket
import struct
import sys

UP, DOWN = 40_000, 100_000
mode, phost, pport, thost, tport = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4], int(sys.argv[5])
c = socket.create_connection((phost, pport), timeout=20)


def exact(n):
    b = b""
    while len(b) < n:
        d = c.recv(n - len(b))
        if not d:
            raise SystemExit("closed during the handshake")
        b += d
    return b


if mode == "socks5":
    c.sendall(b"\x05\x01\x00")
    assert exact(2) == b"\x05\x00", "SOCKS5 method refused"
    c.sendall(b"\x05\x01\x00\x01" + socket.inet_aton(thost) + struct.pack("!H", tport))
    r = exact(4)
    assert r[1] == 0, "SOCKS5 connect refused: %d" % r[1]
    exact(6 if r[3] == 1 else 18)
elif mode == "socks4":
    c.sendall(b"\x04\x01" + struct.pack("!H", tport) + socket.inet_aton(thost) + b"lab\x00")
    assert exact(8)[1] == 0x5A, "SOCKS4 connect refused"
elif mode == "socks4a":
    c.sendall(b"\x04\x01" + struct.pack("!H", tport) + b"\x00\x00\x00\x01lab\x00" + thost.encode() + b"\x00")
    assert exact(8)[1] == 0x5A, "SOCKS4a connect refused"
elif mode == "connect":
    c.sendall(("CONNECT %s:%d HTTP/1.1\r\nHost: %s:%d\r\n\r\n" % (thost, tport, thost, tport)).encode())
    h = b""
    while not h.endswith(b"\r\n\r\n"):
        h += exact(1)
    assert b" 200" in h.split(b"\r\n")[0], h
elif mode != "plain":
    raise SystemExit("unknown mode " + mode)
c.sendall(b"u" * UP)
n = 0
while n < DOWN:
    d = c.recv(65536)
    if not d:
        break
    n += len(d)
if n != DOWN:
    raise SystemExit("got %d of %d bytes back" % (n, DOWN))
