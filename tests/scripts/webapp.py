"""A web application that looks up each request in a database: reads a
request on LHOST:LPORT, sends a 40-byte query to DBHOST:DBPORT, reads the
answer and sends back a page built from it (headers and a bigger body).
Usage: webapp.py LHOST LPORT DBHOST DBPORT"""
import socket
import sys
import threading

s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((sys.argv[1], int(sys.argv[2])))
s.listen(8)


def serve(c):
    if not c.recv(65536):
        return
    db = socket.create_connection((sys.argv[3], int(sys.argv[4])))
    db.sendall(b"SELECT name FROM users WHERE id = 42;  \n")
    rows = db.recv(65536)
    db.close()
    body = b"<html><body><table>" + rows.replace(b"d", b"<tr>row</tr>") + b"</table></body></html>"
    c.sendall(b"HTTP/1.0 200 OK\r\nContent-Type: text/html\r\nContent-Length: %d\r\n\r\n" % len(body) + body)
    c.close()


while True:
    conn, _ = s.accept()
    threading.Thread(target=serve, args=(conn,), daemon=True).start()
