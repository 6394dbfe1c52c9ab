#!/usr/bin/env python3
"""Minimal CQL client: native protocol v4 over a plain socket, no packages.

    cqlping.py [--host H] [--port P] [--timeout S] [STATEMENT ...]

Sends STARTUP, then each STATEMENT (default: the readiness probe
`SELECT release_version FROM system.local`) as a QUERY at consistency ONE, and
prints result rows tab-separated on stdout (other results as one `-- ...`
line). Exit status: 0 success, 1 the server answered with an error,
2 cannot connect / protocol trouble / timeout. Used by cassandra.sh to wait for
readiness and by `cassandra.sh cql`.
"""
import argparse
import ipaddress
import socket
import struct
import sys
import uuid

OP_ERROR, OP_STARTUP, OP_READY, OP_AUTHENTICATE, OP_QUERY, OP_RESULT = 0, 1, 2, 3, 7, 8
CONSISTENCY_ONE = 0x0001


class CqlError(Exception):
    pass


def _string(s):
    b = s.encode()
    return struct.pack(">H", len(b)) + b


def _long_string(s):
    b = s.encode()
    return struct.pack(">i", len(b)) + b


class Reader:
    def __init__(self, buf):
        self.buf, self.pos = buf, 0

    def take(self, n):
        if self.pos + n > len(self.buf):
            raise ValueError("truncated frame")
        b = self.buf[self.pos:self.pos + n]
        self.pos += n
        return b

    def int(self):
        return struct.unpack(">i", self.take(4))[0]

    def short(self):
        return struct.unpack(">H", self.take(2))[0]

    def string(self):
        return self.take(self.short()).decode()

    def bytes(self):
        n = self.int()
        return None if n < 0 else self.take(n)

    def option(self):
        """A column type as a (id, params) tree."""
        tid = self.short()
        if tid == 0x0000:
            return (tid, self.string())
        if tid in (0x0020, 0x0022):  # list, set
            return (tid, self.option())
        if tid == 0x0021:  # map
            return (tid, (self.option(), self.option()))
        if tid == 0x0030:  # UDT
            self.string(), self.string()
            fields = [(self.string(), self.option()) for _ in range(self.short())]
            return (tid, fields)
        if tid == 0x0031:  # tuple
            return (tid, [self.option() for _ in range(self.short())])
        return (tid, None)


def decode(t, b):
    if b is None:
        return "null"
    tid, params = t
    if tid in (0x0001, 0x000D):  # ascii, varchar
        return b.decode(errors="replace")
    if tid in (0x0002, 0x0005, 0x0009, 0x0013, 0x0014, 0x000E):  # ints, varint
        return str(int.from_bytes(b, "big", signed=True))
    if tid == 0x0004:
        return "true" if b != b"\x00" else "false"
    if tid == 0x0007:
        return repr(struct.unpack(">d", b)[0])
    if tid == 0x0008:
        return repr(struct.unpack(">f", b)[0])
    if tid in (0x000C, 0x000F):  # uuid, timeuuid
        return str(uuid.UUID(bytes=b))
    if tid == 0x0010:
        return str(ipaddress.ip_address(b))
    if tid in (0x0020, 0x0022):
        r = Reader(b)
        items = [decode(params, r.bytes()) for _ in range(r.int())]
        return ("[%s]" if tid == 0x0020 else "{%s}") % ", ".join(items)
    if tid == 0x0021:
        r = Reader(b)
        kt, vt = params
        items = ["%s: %s" % (decode(kt, r.bytes()), decode(vt, r.bytes())) for _ in range(r.int())]
        return "{%s}" % ", ".join(items)
    return "0x" + b.hex()


class Conn:
    def __init__(self, host, port, timeout):
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.stream = 0

    def request(self, opcode, body):
        self.stream = (self.stream + 1) % 32768
        self.sock.sendall(struct.pack(">BBhBi", 0x04, 0, self.stream, opcode, len(body)) + body)
        header = self._recv(9)
        _version, flags, _stream, op, length = struct.unpack(">BBhBi", header)
        body = self._recv(length)
        if flags & 0x01:
            raise ConnectionError("compressed frame (never requested)")
        r = Reader(body)
        if flags & 0x02:  # tracing id
            r.take(16)
        if flags & 0x08:  # warnings: [string list]
            for _ in range(r.short()):
                print("cqlping: warning: %s" % r.string(), file=sys.stderr)
        if flags & 0x04:  # custom payload: [bytes map]
            for _ in range(r.short()):
                r.string(), r.bytes()
        body = body[r.pos:]
        if op == OP_ERROR:
            r = Reader(body)
            code = r.int()
            raise CqlError("server error 0x%04x: %s" % (code, r.string()))
        return op, body

    def _recv(self, n):
        buf = b""
        while len(buf) < n:
            chunk = self.sock.recv(n - len(buf))
            if not chunk:
                raise ConnectionError("connection closed by server")
            buf += chunk
        return buf

    def startup(self):
        body = struct.pack(">H", 1) + _string("CQL_VERSION") + _string("3.0.0")
        op, _ = self.request(OP_STARTUP, body)
        if op == OP_AUTHENTICATE:
            raise CqlError("server requires authentication (not supported here)")
        if op != OP_READY:
            raise ConnectionError("unexpected opcode %d after STARTUP" % op)

    def query(self, cql):
        body = _long_string(cql) + struct.pack(">HB", CONSISTENCY_ONE, 0)
        op, body = self.request(OP_QUERY, body)
        if op != OP_RESULT:
            raise ConnectionError("unexpected opcode %d after QUERY" % op)
        r = Reader(body)
        kind = r.int()
        if kind == 0x0001:
            return "-- ok", None
        if kind == 0x0003:
            return "-- keyspace " + r.string(), None
        if kind == 0x0005:
            change, target = r.string(), r.string()
            name = r.string()
            if target != "KEYSPACE":
                name += "." + r.string()
            return "-- schema change: %s %s %s" % (change, target, name), None
        if kind != 0x0002:
            return "-- result kind %d" % kind, None
        flags, ncols = r.int(), r.int()
        if flags & 0x0002:  # has_more_pages
            r.bytes()
        cols = []
        if not flags & 0x0004:  # no_metadata not set
            if flags & 0x0001:  # global_tables_spec
                r.string(), r.string()
            for _ in range(ncols):
                if not flags & 0x0001:
                    r.string(), r.string()
                cols.append((r.string(), r.option()))
        rows = []
        for _ in range(r.int()):
            rows.append([decode(cols[i][1], r.bytes()) if cols else r.bytes().hex() for i in range(ncols)])
        return cols, rows


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=9042)
    ap.add_argument("--timeout", type=float, default=10.0, help="seconds for connect and each reply")
    ap.add_argument("--header", action="store_true", help="print column names before rows")
    ap.add_argument("statements", nargs="*")
    args = ap.parse_args()
    statements = args.statements or ["SELECT release_version FROM system.local"]
    try:
        conn = Conn(args.host, args.port, args.timeout)
        conn.startup()
        for cql in statements:
            res, rows = conn.query(cql)
            if rows is None:
                print(res)
                continue
            if args.header:
                print("\t".join(name for name, _ in res))
            for row in rows:
                print("\t".join(row))
    except CqlError as e:
        print("cqlping: %s" % e, file=sys.stderr)
        return 1
    except (OSError, ValueError, struct.error) as e:
        print("cqlping: %s:%d: %s" % (args.host, args.port, e), file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
