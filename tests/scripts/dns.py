"""A minimal DNS server and clients over UDP.
server: answers every query with an A record 192.0.2.53 (TTL 0).
client: N ordinary lookups (hostI.ZONE), a socket each, as a stub
resolver makes them; prints how many were answered.
tunnel: N queries on one socket, 10 a second, each name carrying 90
characters of base32 data in two labels, as a DNS tunnel sends them;
prints how many were answered.
Usage: dns.py server BIND PORT | dns.py client|tunnel SERVER PORT ZONE N"""
import socket
import struct
import sys


def name(labels):
    return b"".join(bytes([len(x)]) + x for x in labels) + b"\x00"


if sys.argv[1] == "server":
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind((sys.argv[2], int(sys.argv[3])))
    while True:
        q, peer = s.recvfrom(4096)
        if len(q) < 12:
            continue
        end = 12
        while end < len(q) and q[end] != 0:
            end += 1 + q[end]
        question = q[12:end + 5]
        head = q[:2] + b"\x81\x80" + struct.pack("!HHHH", 1, 1, 0, 0)
        rr = b"\xc0\x0c" + struct.pack("!HHIH", 1, 1, 0, 4) + socket.inet_aton("192.0.2.53")
        s.sendto(head + question + rr, peer)

server, port, zone, n = sys.argv[2], int(sys.argv[3]), sys.argv[4], int(sys.argv[5])
answered = 0
if sys.argv[1] == "tunnel":
    import base64
    import os
    import time
    c = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    c.settimeout(3)
    for i in range(n):
        data = base64.b32encode(os.urandom(56)).decode().rstrip("=").lower()
        labels = [data[:45].encode(), data[45:90].encode()] + [x.encode() for x in zone.split(".")]
        q = struct.pack("!HHHHHH", i, 0x0100, 1, 0, 0, 0) + name(labels) + struct.pack("!HH", 16, 1)
        c.sendto(q, (server, port))
        try:
            c.recv(4096)
            answered += 1
        except socket.timeout:
            pass
        time.sleep(0.1)
    print(answered, flush=True)
    sys.exit(0)
for i in range(n):
    c = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    c.settimeout(3)
    labels = [b"host%d" % i] + [x.encode() for x in zone.split(".")]
    q = struct.pack("!HHHHHH", 0x1000 + i, 0x0100, 1, 0, 0, 0) + name(labels) + struct.pack("!HH", 1, 1)
    c.sendto(q, (server, port))
    try:
        if c.recv(4096)[:2] == q[:2]:
            answered += 1
    except socket.timeout:
        pass
    c.close()
print(answered, flush=True)
