"""A tiny DNS server and client over UDP, for the lab's resolver look-alikes.

server: answers every A query with one A record (192.0.2.80, TTL 60), other
types with no answer; a malformed query is dropped.
query: asks SERVER:PORT for NAME's A record COUNT times (a new id, and a
numbered label before NAME each time so no cache answers it), and fails
unless each answer carries one A record.

Usage: dns.py server ADDR PORT
       dns.py query SERVER PORT NAME COUNT"""
import random
import socket
import struct
import sys


def encode_name(name):
    return b"".join(bytes([len(p)]) + p.encode() for p in name.strip(".").split(".")) + b"\x00"


def skip_name(msg, i):
    while msg[i]:
        if msg[i] & 0xC0 == 0xC0:
            return i + 2
        i += msg[i] + 1
    return i + 1


def server(addr, port):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind((addr, port))
    while True:
        q, peer = s.recvfrom(4096)
        try:
            qid, flags, qd = struct.unpack("!HHH", q[:6])
            end = skip_name(q, 12)
            qtype, _ = struct.unpack("!HH", q[end:end + 4])
        except (struct.error, IndexError):
            continue
        question = q[12:end + 4]
        answer = b""
        if qtype == 1:
            answer = b"\xc0\x0c" + struct.pack("!HHIH", 1, 1, 60, 4) + socket.inet_aton("192.0.2.80")
        header = struct.pack("!HHHHHH", qid, 0x8180 | (flags & 0x0100), 1, 1 if answer else 0, 0, 0)
        s.sendto(header + question + answer, peer)


def query(host, port, name, count):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.settimeout(2)
    for n in range(count):
        qid = random.randrange(65536)
        q = struct.pack("!HHHHHH", qid, 0x0100, 1, 0, 0, 0) + encode_name("q%d.%s" % (n, name)) + struct.pack("!HH", 1, 1)
        for attempt in range(3):
            s.sendto(q, (host, port))
            try:
                a = s.recv(4096)
            except socket.timeout:
                continue
            if a[:2] == q[:2]:
                break
        else:
            raise SystemExit("no answer from %s:%d" % (host, port))
        rcode, ancount = a[3] & 0x0F, struct.unpack("!H", a[6:8])[0]
        if rcode != 0 or ancount < 1:
            raise SystemExit("answer with rcode %d and %d records" % (rcode, ancount))


if len(sys.argv) == 4 and sys.argv[1] == "server":
    server(sys.argv[2], int(sys.argv[3]))
elif len(sys.argv) == 6 and sys.argv[1] == "query":
    query(sys.argv[2], int(sys.argv[3]), sys.argv[4], int(sys.argv[5]))
else:
    raise SystemExit(__doc__)
