"""An ICMP echo tunnel's two ends, on raw sockets: the client sends data
in echo requests and reads data from the answers; the server answers each
request with its own payload (not an echo), as ptunnel-like tools do. The
server's namespace must not answer pings itself
(net.ipv4.icmp_echo_ignore_all=1).
Usage: icmp_tunnel.py client DEST N | icmp_tunnel.py server"""
import os
import socket
import struct
import sys
import time


def checksum(b):
    if len(b) % 2:
        b += b"\x00"
    s = sum(struct.unpack("!%dH" % (len(b) // 2), b))
    s = (s >> 16) + (s & 0xFFFF)
    s += s >> 16
    return ~s & 0xFFFF


def echo(kind, ident, seq, payload):
    head = struct.pack("!BBHHH", kind, 0, 0, ident, seq)
    return struct.pack("!BBHHH", kind, 0, checksum(head + payload), ident, seq) + payload


s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
if sys.argv[1] == "server":
    while True:
        pkt, peer = s.recvfrom(65536)
        icmp = pkt[(pkt[0] & 0x0F) * 4:]
        if icmp[0] != 8:
            continue
        ident, seq = struct.unpack("!HH", icmp[4:8])
        s.sendto(echo(0, ident, seq, b"R" + os.urandom(96 + seq % 64)), (peer[0], 0))

dest, n = sys.argv[2], int(sys.argv[3])
ident = os.getpid() & 0xFFFF
s.settimeout(2)
got = 0
for seq in range(n):
    s.sendto(echo(8, ident, seq, b"Q" + os.urandom(24 + seq % 40)), (dest, 0))
    deadline = time.time() + 2
    while time.time() < deadline:
        try:
            pkt, _ = s.recvfrom(65536)
        except socket.timeout:
            break
        icmp = pkt[(pkt[0] & 0x0F) * 4:]
        if icmp[0] == 0 and struct.unpack("!H", icmp[4:6])[0] == ident:
            got += 1
            break
    time.sleep(0.1)
print(got, flush=True)
