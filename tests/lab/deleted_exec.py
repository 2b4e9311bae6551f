"""Execution of a deleted file: copies a program to PATH, opens it, deletes
it and executes it through the open descriptor, so the running executable
has no links left. Usage: deleted_exec.py PROGRAM PATH [ARGS...]"""
import os
import shutil
import sys

shutil.copy(sys.argv[1], sys.argv[2])
os.chmod(sys.argv[2], 0o755)
fd = os.open(sys.argv[2], os.O_RDONLY)
os.unlink(sys.argv[2])
os.execv("/proc/self/fd/%d" % fd, [sys.argv[2]] + sys.argv[3:])
