#!/usr/bin/env python3
"""The Python reference for the benchmark: the original flow-chart's design (a thread per
connection, socketserver.ThreadingTCPServer), speaking protocol v1 well enough to be measured
side by side with ioe: LIST, READ (offset, length), WRITE (temporary file, SHA-256, fsync,
no-clobber publish by hard link), HASH, BYE. Reads and writes use 1 MiB buffers.

It is a baseline, not a server to run: no name checks beyond refusing `..` and hidden
segments, no limits, no timeouts.

    python3 python-reference.py --root DIR [--host 127.0.0.1] [--port 0]

prints `listening on HOST:PORT` when ready.
"""
import argparse
import hashlib
import os
import socketserver
import sys
import uuid

CHUNK = 1024 * 1024
EXTENSIONS = {
    "video": (".mov", ".mp4", ".m4v", ".mkv", ".avi", ".webm"),
    "music": (".mp3", ".m4a", ".aac", ".flac", ".wav", ".ogg", ".opus"),
    "picture": (".jpg", ".jpeg", ".png", ".gif", ".webp", ".heic", ".bmp", ".tif", ".tiff"),
}


def media_type(name):
    lower = name.lower()
    for kind, extensions in EXTENSIONS.items():
        if lower.endswith(extensions):
            return kind
    return None


def safe(name):
    return name and not name.startswith("/") and all(
        part and not part.startswith(".") for part in name.split("/")
    )


class Handler(socketserver.StreamRequestHandler):
    # Smaller than the 1 MiB reads: CPython's buffered reader then receives a payload straight
    # into the caller's buffer, where a buffer as large as the read would copy every byte twice.
    rbufsize = 64 * 1024
    # TCP_NODELAY, as ioe and raw-node set it: otherwise the tail of a reply that is not a
    # whole segment waits for the client's delayed ACK (up to 40 ms a request on the loopback).
    disable_nagle_algorithm = True

    def reply(self, text):
        self.wfile.write(text.encode())

    def handle(self):
        root = self.server.root
        while True:
            line = self.rfile.readline(4096)
            if not line:
                return
            text = line.rstrip(b"\r\n").decode("utf-8", "replace")
            verb, _, args = text.partition(",")
            verb = verb.upper()
            if verb == "BYE":
                self.reply("OK BYE\n")
                return
            if verb == "LIST":
                self.list(root)
            elif verb == "READ":
                self.read(root, args)
            elif verb == "WRITE":
                name, _, size = args.rpartition(",")
                self.write(root, name, int(size))
            elif verb == "HASH":
                self.hash(root, args)
            elif text:
                self.reply("ERR UNKNOWN_COMMAND unknown command\n")
            self.wfile.flush()

    def list(self, root):
        entries = []
        for folder, _, files in os.walk(root):
            for file in files:
                path = os.path.join(folder, file)
                name = os.path.relpath(path, root)
                kind = media_type(name)
                if kind and safe(name):
                    stat = os.stat(path)
                    entries.append((name, kind, stat.st_size, stat.st_mtime))
        entries.sort(key=lambda entry: entry[0].encode())
        lines = [f"OK {len(entries)}\n"]
        for name, kind, size, mtime in entries:
            lines.append(f"{kind}\t{name}\t{size}\t{mtime}\n")
        self.reply("".join(lines))

    def read(self, root, args):
        fields = args.split(",")
        numbers = []
        while len(fields) > 1 and fields[-1].isdigit() and not media_type(fields[-1]):
            numbers.insert(0, int(fields.pop()))
        name = ",".join(fields)
        offset = numbers[0] if numbers else 0
        if not safe(name):
            self.reply("ERR BAD_NAME bad name\n")
            return
        try:
            with open(os.path.join(root, name), "rb", buffering=0) as file:
                size = os.fstat(file.fileno()).st_size
                length = min(numbers[1] if len(numbers) > 1 else size, size - offset)
                self.reply(f"OK {length}\n")
                file.seek(offset)
                # One buffer for the whole reply, as WRITE has: a connection holds at most 1 MiB.
                view = memoryview(bytearray(max(1, min(CHUNK, length))))
                left = length
                while left > 0:
                    count = file.readinto(view[: min(CHUNK, left)])
                    if not count:
                        break
                    self.wfile.write(view[:count])
                    left -= count
        except FileNotFoundError:
            self.reply("ERR NOT_FOUND no such media file\n")

    def write(self, root, name, size):
        path = os.path.join(root, name)
        temp = os.path.join(root, f".py-upload-{uuid.uuid4().hex}.tmp")
        digest = hashlib.sha256()
        buffer = bytearray(CHUNK)
        view = memoryview(buffer)
        left = size
        with open(temp, "wb") as file:
            while left > 0:
                count = self.rfile.readinto(view[: min(CHUNK, left)])
                if not count:
                    os.unlink(temp)
                    return
                digest.update(view[:count])
                file.write(view[:count])
                left -= count
            file.flush()
            os.fsync(file.fileno())
        os.makedirs(os.path.dirname(path) or root, exist_ok=True)
        try:
            os.link(temp, path)
        except FileExistsError:
            self.reply("ERR EXISTS a file of that name exists\n")
            return
        finally:
            os.unlink(temp)
        self.reply(f"OK {size} {digest.hexdigest()}\n")

    def hash(self, root, name):
        digest = hashlib.sha256()
        size = 0
        with open(os.path.join(root, name), "rb") as file:
            while data := file.read(CHUNK):
                digest.update(data)
                size += len(data)
        self.reply(f"OK {digest.hexdigest()} {size}\n")


class Server(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 1024

    def handle_error(self, request, client_address):
        # A client that goes away mid-reply (the benchmark closes its slow readers) is no
        # fault of the server: no traceback for it.
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--root", required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    options = parser.parse_args()
    with Server((options.host, options.port), Handler) as server:
        server.root = os.path.realpath(options.root)
        host, port = server.server_address[:2]
        print(f"listening on {host}:{port}", flush=True)
        try:
            server.serve_forever()
        except KeyboardInterrupt:
            pass


if __name__ == "__main__":
    sys.exit(main())
