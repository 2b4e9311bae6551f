"""A minimal DNS server and client over UDP, for the forwarder tests.
Server: answers every A query with 192.0.2.53 (TTL 0).
Client: sends N queries for NAMEs under a zone and prints how many were
answered.
Usage: dns.py server BIND PORT | dns.py client SERVER PORT ZONE N"""
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
