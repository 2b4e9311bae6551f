"""The lab's short-exchange target. TCP: for each connection, reads REQUEST
bytes (with --http: an HTTP request's head, however long), answers ANSWER
bytes (with --http: an HTTP/1.1 response whose body is ANSWER bytes) and
closes. UDP (--udp): answers each datagram with ANSWER bytes, the first two
copied from the query (a DNS-like transaction id).
Usage: answer.py [--udp | --http] ADDR PORT REQUEST ANSWER"""
import socket
import sys
import threading

args = sys.argv[1:]
mode = args.pop(0)[2:] if args and args[0].startswith("--") else "tcp"
if mode not in ("tcp", "udp", "http") or len(args) != 4:
    raise SystemExit(__doc__)
addr, port, request, answer = args[0], int(args[1]), int(args[2]), int(args[3])


def serve(c):
    with c:
        c.settimeout(10)
        got = b""
        try:
            if mode == "http":
                while b"\r\n\r\n" not in got and len(got) < 65536:
                    d = c.recv(4096)
                    if not d:
                        return
                    got += d
                body = b"a" * answer
                c.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n"
                          b"Connection: close\r\n\r\n" % len(body) + body)
            else:
                while len(got) < request:
                    d = c.recv(request - len(got))
                    if not d:
                        return
                    got += d
                c.sendall(b"a" * answer)
            c.shutdown(socket.SHUT_WR)
            # Wait for the client's close, so the answer is not cut short by a reset.
            while c.recv(4096):
                pass
        except OSError:
            pass


if mode == "udp":
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind((addr, port))
    while True:
        q, peer = s.recvfrom(65536)
        s.sendto(q[:2] + b"a" * max(answer - 2, 0), peer)
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((addr, port))
s.listen(16)
while True:
    conn, _ = s.accept()
    threading.Thread(target=serve, args=(conn,), daemon=True).start()
