"""The lab's relay client: connects to PROXY_HOST:PROXY_PORT directly
(plain) or through SOCKS4, SOCKS4a, SOCKS5 or HTTP CONNECT to TARGET:PORT,
sends UP bytes and reads the DOWN-byte answer (by default 40,000 and
100,000, what sink.py reads and answers; answer.py takes any sizes).
Two more modes: http sends an HTTP forward-proxy request in absolute form
(GET http://TARGET:PORT/ HTTP/1.1) to the proxy and reads a response with a
DOWN-byte body (answer.py --http); udp sends one UP-byte datagram to
PROXY_HOST:PROXY_PORT and waits for a DOWN-byte answer (answer.py --udp).
Usage: relay_client.py MODE PROXY_HOST PROXY_PORT TARGET PORT [UP DOWN]"""
import socket
import struct
import sys

if len(sys.argv) not in (6, 8):
    raise SystemExit(__doc__)
mode, phost, pport, thost, tport = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4], int(sys.argv[5])
UP, DOWN = (int(sys.argv[6]), int(sys.argv[7])) if len(sys.argv) == 8 else (40_000, 100_000)

if mode == "udp":
    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    u.settimeout(2)
    query = b"\x4c\x61" + b"q" * (UP - 2)
    for attempt in range(3):
        u.sendto(query, (phost, pport))
        try:
            a, _ = u.recvfrom(65536)
        except socket.timeout:
            continue
        if len(a) != DOWN or a[:2] != query[:2]:
            raise SystemExit("got a %d-byte answer, wanted %d" % (len(a), DOWN))
        sys.exit(0)
    raise SystemExit("no answer to 3 datagrams")

c = socket.create_connection((phost, pport), timeout=20)


def exact(n):
    b = b""
    while len(b) < n:
        d = c.recv(n - len(b))
        if not d:
            raise SystemExit("closed during the handshake")
        b += d
    return b


def head():
    h = b""
    while not h.endswith(b"\r\n\r\n"):
        h += exact(1)
    return h


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
    h = head()
    assert b" 200" in h.split(b"\r\n")[0], h
elif mode == "http":
    c.sendall(("GET http://%s:%d/ HTTP/1.1\r\nHost: %s:%d\r\nUser-Agent: lab/1.0\r\nAccept: */*\r\n"
               "Connection: close\r\n\r\n" % (thost, tport, thost, tport)).encode())
    h = head()
    assert b" 200" in h.split(b"\r\n")[0], h
    n = 0
    while True:
        d = c.recv(65536)
        if not d:
            break
        n += len(d)
    if n != DOWN:
        raise SystemExit("got a %d-byte body, wanted %d" % (n, DOWN))
    sys.exit(0)
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
