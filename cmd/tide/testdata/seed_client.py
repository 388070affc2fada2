"""The seed course's client scripts, upload.py FILE IP and download.py NAME
IP, in one file: hash the name, call find_successor on IP:5057 over
msgpack-rpc, then upload to or download from the owner's port 5058.

usage: seed_client.py upload FILE IP
       seed_client.py download NAME IP OUT
"""
import hashlib
import socket
import sys
import urllib.request
import uuid

import msgpack


def find_successor(ip, key):
    s = socket.create_connection((ip, 5057), timeout=10)
    s.sendall(msgpack.packb([0, 1, "find_successor", [key]], use_bin_type=False))
    u = msgpack.Unpacker(raw=False)
    while True:
        data = s.recv(4096)
        if not data:
            raise SystemExit("connection closed")
        u.feed(data)
        for typ, msgid, err, node in u:
            if err is not None:
                raise SystemExit("rpc error: %r" % (err,))
            return node


def key_of(name):
    return int.from_bytes(hashlib.md5(name.encode()).digest()[12:], "big")


def main():
    op = sys.argv[1]
    if op == "upload":
        path, ip = sys.argv[2], sys.argv[3]
        name = path.rsplit("/", 1)[-1]
        node = find_successor(ip, key_of(name))
        body = open(path, "rb").read()
        boundary = uuid.uuid4().hex
        form = (("--%s\r\nContent-Disposition: form-data; name=\"files\"; filename=\"%s\"\r\n"
                 "Content-Type: application/octet-stream\r\n\r\n") % (boundary, name)).encode()
        form += body + ("\r\n--%s--\r\n" % boundary).encode()
        req = urllib.request.Request("http://%s:5058/upload" % node[0], data=form, method="POST",
                                     headers={"Content-Type": "multipart/form-data; boundary=" + boundary})
        with urllib.request.urlopen(req) as resp:
            print(resp.status)
    elif op == "download":
        name, ip, out = sys.argv[2], sys.argv[3], sys.argv[4]
        node = find_successor(ip, key_of(name))
        with urllib.request.urlopen("http://%s:5058/%s" % (node[0], name)) as resp:
            open(out, "wb").write(resp.read())
            print(resp.status)


main()
