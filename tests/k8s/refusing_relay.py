#!/usr/bin/env python3
"""A TCP relay to a KMS endpoint that can refuse every connection, for tests/k8s/run.sh.

    refusing_relay.py LISTEN_PORT TARGET_PORT DOWN_FILE

Relays 127.0.0.1:LISTEN_PORT to 127.0.0.1:TARGET_PORT. While DOWN_FILE exists the listening socket
is closed (connections are refused) and every relayed connection is shut down, so a client's
pooled connections fail too; once the file is gone it listens again on the same port.
"""
import os
import select
import socket
import sys
import threading
import time

listen_port, target_port, down_file = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
open_sockets = set()
lock = threading.Lock()


def shut(sock):
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass


def pump(source, sink):
    try:
        while True:
            data = source.recv(65536)
            if not data:
                break
            sink.sendall(data)
    except OSError:
        pass
    shut(source)
    shut(sink)


def relay(client):
    try:
        upstream = socket.create_connection(("127.0.0.1", target_port), timeout=5)
        upstream.settimeout(None)
    except OSError:
        client.close()
        return
    with lock:
        open_sockets.update((client, upstream))
    back = threading.Thread(target=pump, args=(upstream, client), daemon=True)
    back.start()
    pump(client, upstream)
    back.join()
    with lock:
        open_sockets.difference_update((client, upstream))
    client.close()
    upstream.close()


def listen():
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", listen_port))
    sock.listen(64)
    return sock


listener = listen()
while True:
    down = os.path.exists(down_file)
    if down and listener is not None:
        listener.close()
        listener = None
        with lock:
            for sock in list(open_sockets):
                shut(sock)
        print("down: refusing", flush=True)
    elif not down and listener is None:
        listener = listen()
        print("up: relaying", flush=True)
    if listener is None:
        time.sleep(0.1)
        continue
    ready, _, _ = select.select([listener], [], [], 0.1)
    if ready:
        client, _ = listener.accept()
        threading.Thread(target=relay, args=(client,), daemon=True).start()
