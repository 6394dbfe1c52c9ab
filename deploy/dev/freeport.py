#!/usr/bin/env python3
"""Print N distinct free TCP ports on 127.0.0.1, one per line.

Ports are drawn at random from below the kernel's ephemeral range (so they do
not compete with the source ports of outgoing connections, which load tests use
in bulk) and each is checked by binding it. All sockets stay open until every
port is chosen, so the N ports are distinct. Falls back to port 0 (kernel's
choice) if the range below the ephemeral one is exhausted.
A port can still be taken between this check and the server's own bind: the
start scripts detect that and retry with new ports.
"""
import random
import socket
import sys


def ephemeral_low():
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            return int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def try_bind(port):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        s.bind(("127.0.0.1", port))
        s.listen(1)
        return s
    except OSError:
        s.close()
        return None


def main():
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 1
    lo, hi = 20000, max(20001, ephemeral_low() - 1)
    held, ports = [], []
    rng = random.SystemRandom()
    attempts = 0
    while len(ports) < n and attempts < 200:
        attempts += 1
        p = rng.randint(lo, hi)
        if p in ports:
            continue
        s = try_bind(p)
        if s:
            held.append(s)
            ports.append(p)
    while len(ports) < n:
        s = try_bind(0)
        if not s:
            sys.exit("freeport: cannot bind 127.0.0.1")
        held.append(s)
        ports.append(s.getsockname()[1])
    for s in held:
        s.close()
    print("\n".join(str(p) for p in ports))


if __name__ == "__main__":
    main()
