"""A stand-in for the kubelets of several nodes, for the autopilot test of tests/k8s/run.sh: runs
the command of each kubeadm-shaped manifest given and restarts it whenever the manifest's content
changes (SIGTERM, then SIGKILL after 10 s), as each node's kubelet does, every manifest on its own
thread (nodes act independently). Every stop and start is logged to EVENTS as
`<unix time> <node> down|up`, the node being the directory above the manifest's directory.
    python3 static_pods.py EVENTS LOGDIR MANIFEST...
Stops everything on SIGTERM."""
import os
import signal
import subprocess
import sys
import threading
import time

events_path, log_dir, manifests = sys.argv[1], sys.argv[2], sys.argv[3:]
events_lock = threading.Lock()
stopping = threading.Event()


def event(node, what):
    with events_lock, open(events_path, "a") as f:
        f.write(f"{time.time():.3f} {node} {what}\n")


def command_of(text):
    out, inside = [], False
    for line in text.splitlines():
        if line.strip() == "- command:":
            inside = True
            continue
        if inside:
            if not line.startswith("    - "):
                break
            out.append(line[len("    - "):].strip().strip('"'))
    return out


def stop(node, proc):
    event(node, "down")
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def kubelet(manifest):
    node = os.path.basename(os.path.dirname(os.path.dirname(manifest)))
    seen, proc = None, None
    while not stopping.is_set():
        try:
            text = open(manifest).read()
        except OSError:
            text = None
        if text is not None and text != seen:
            seen = text
            if proc is not None:
                stop(node, proc)
            log = open(os.path.join(log_dir, f"{node}.log"), "a")
            proc = subprocess.Popen(command_of(text), stdout=log, stderr=log, stdin=subprocess.DEVNULL)
            event(node, "up")
        time.sleep(0.1)
    if proc is not None:
        stop(node, proc)


signal.signal(signal.SIGTERM, lambda *_: stopping.set())
threads = [threading.Thread(target=kubelet, args=(m,)) for m in manifests]
for t in threads:
    t.start()
while any(t.is_alive() for t in threads):
    for t in threads:
        t.join(0.2)
