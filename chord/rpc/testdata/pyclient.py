"""Calls find_successor the way the course's upload.py does: hash the file
name, ask the given node, print the owner. Strings are packed as raw bytes,
as msgpack-rpc-python does."""
import hashlib
import socket
import sys

import msgpack

host, port, name = sys.argv[1], int(sys.argv[2]), sys.argv[3]
key = int.from_bytes(hashlib.md5(name.encode()).digest()[12:], "big")
s = socket.create_connection((host, port))
s.sendall(msgpack.packb([0, 1, "find_successor", [key]], use_bin_type=False))
u = msgpack.Unpacker(raw=False)
while True:
    u.feed(s.recv(4096))
    for msg in u:
        typ, msgid, err, node = msg
        assert typ == 1 and msgid == 1 and err is None, msg
        ip, nport, nid = node
        print(ip, nport, nid, key)
        sys.exit(0)
