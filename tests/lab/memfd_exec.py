"""Fileless execution: copies a program into a memfd and executes it from
there, so the executable has no path on disk. Usage: memfd_exec.py PROGRAM [ARGS...]"""
import os
import sys

fd = os.memfd_create("lab-payload", 0)
with open(sys.argv[1], "rb") as f:
    os.write(fd, f.read())
os.execv("/proc/self/fd/%d" % fd, sys.argv[1:])
