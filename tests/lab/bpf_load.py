"""Loads a minimal eBPF socket filter (r0 = 0; exit) through the bpf(2)
system call and holds it for SECONDS: a BPF program loaded by a process
other than the monitor. Usage: bpf_load.py SECONDS"""
import ctypes
import struct
import sys
import time

SYS_BPF, BPF_PROG_LOAD, BPF_PROG_TYPE_SOCKET_FILTER = 321, 5, 1
insns = struct.pack("<BBhi", 0xB7, 0, 0, 0) + struct.pack("<BBhi", 0x95, 0, 0, 0)
licence = ctypes.create_string_buffer(b"GPL")
code = ctypes.create_string_buffer(insns, len(insns))
# union bpf_attr for BPF_PROG_LOAD: prog_type, insn_cnt, insns, license, ...
attr = struct.pack("<IIQQ", BPF_PROG_TYPE_SOCKET_FILTER, 2, ctypes.addressof(code), ctypes.addressof(licence))
attr += b"\0" * (128 - len(attr))
buf = ctypes.create_string_buffer(attr, len(attr))
libc = ctypes.CDLL(None, use_errno=True)
fd = libc.syscall(SYS_BPF, BPF_PROG_LOAD, buf, len(attr))
if fd < 0:
    raise SystemExit("bpf(BPF_PROG_LOAD) failed: errno %d" % ctypes.get_errno())
time.sleep(float(sys.argv[1]))
