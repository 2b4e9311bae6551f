"""The operator's end of a reverse SOCKS agent: waits on LHOST:LPORT for
the agent to dial in, asks it for THOST:TPORT as a SOCKS5 client would,
sends UP bytes, reads DOWN bytes and prints how many it got, then keeps
the connection open HOLD seconds.
Usage: socks5_operator.py LHOST LPORT THOST TPORT UP DOWN HOLD"""
import socket
import struct
import sys
import time

lhost, lport, thost, tport = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4])
up, down, hold = int(sys.argv[5]), int(sys.argv[6]), float(sys.argv[7])
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((lhost, lport))
s.listen(1)
print("listening", flush=True)
s.settimeout(30)
c, _ = s.accept()
c.sendall(b"\x05\x01\x00")
c.recv(2)
c.sendall(b"\x05\x01\x00\x01" + socket.inet_aton(thost) + struct.pack("!H", tport))
c.recv(10)
c.sendall(b"u" * up)
n = 0
while n < down:
    d = c.recv(65536)
    if not d:
        break
    n += len(d)
print(n, flush=True)
time.sleep(hold)
