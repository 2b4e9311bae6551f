"""A UDP relay: each datagram to LHOST:LPORT goes to THOST:TPORT from
another socket, and the answer back to the sender.
Usage: udp_forward.py LHOST LPORT THOST TPORT"""
import socket
import sys

listen = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
listen.bind((sys.argv[1], int(sys.argv[2])))
upstream = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
while True:
    data, client = listen.recvfrom(65536)
    upstream.sendto(data, (sys.argv[3], int(sys.argv[4])))
    answer, _ = upstream.recvfrom(65536)
    listen.sendto(answer, client)
