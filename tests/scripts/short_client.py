"""A client for relay tests: reaches THOST:TPORT through a relay or proxy
at PHOST:PPORT, sends UP bytes, reads DOWN bytes, prints how many it got,
then keeps the connection open HOLD seconds.
Usage: short_client.py MODE PHOST PPORT THOST TPORT UP DOWN HOLD
MODE: plain, socks4, socks5, connect (HTTP CONNECT), http_proxy (a GET in
absolute form: the proxy answers with the target's HTTP response), udp."""
import socket
import struct
import sys
import time

mode, phost, pport, thost, tport = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4], int(sys.argv[5])
up, down, hold = int(sys.argv[6]), int(sys.argv[7]), float(sys.argv[8])
family = socket.AF_INET6 if ":" in phost else socket.AF_INET

if mode == "udp":
    c = socket.socket(family, socket.SOCK_DGRAM)
    c.settimeout(10)
    c.sendto(b"u" * up, (phost, pport))
    print(len(c.recv(65536)), flush=True)
    sys.exit(0)

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
    c.sendall(b"\x04\x01" + struct.pack("!H", tport) + socket.inet_aton(thost) + b"u\x00")
    assert exact(8)[1] == 0x5A, "SOCKS4 connect refused"
elif mode == "connect":
    c.sendall(("CONNECT %s:%d HTTP/1.1\r\nHost: %s:%d\r\n\r\n" % (thost, tport, thost, tport)).encode())
    h = b""
    while not h.endswith(b"\r\n\r\n"):
        h += exact(1)
    assert b" 200" in h.split(b"\r\n")[0], h
elif mode == "http_proxy":
    body = b"u" * up
    c.sendall(b"POST http://%s:%d/x HTTP/1.0\r\nHost: %s:%d\r\nContent-Length: %d\r\n\r\n"
              % (thost.encode(), tport, thost.encode(), tport, len(body)) + body)
    n = 0
    while True:
        d = c.recv(65536)
        if not d:
            break
        n += len(d)
    print(n, flush=True)
    sys.exit(0)
elif mode != "plain":
    raise SystemExit("unknown mode " + mode)
c.sendall(b"u" * up)
n = 0
while n < down:
    d = c.recv(65536)
    if not d:
        break
    n += len(d)
print(n, flush=True)
time.sleep(hold)
c.close()
