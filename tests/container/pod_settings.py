"""Turns the static pod's settings into container engine flags, for tests/container.sh.

Usage: pod_settings.py POD_YAML PLUGIN_CONFIG HOST_ROOT ENGINE

Prints bash assignments (for `eval`):
  run_flags    --user, --read-only, --cap-drop, --security-opt, --network, --stop-timeout and one
               --volume per hostPath mount, the host side placed under HOST_ROOT (the host path
               /var/lib/kms-plugin becomes HOST_ROOT/var/lib/kms-plugin)
  pod_command  the container's command
  uid gid      runAsUser and runAsGroup
  socket       the plugin socket (from PLUGIN_CONFIG) as seen from the host
  state_dir    the local backend's state directory as seen from the host
  config_file  where the pod's --config file is on the host
  probe_command  the liveness probe's exec command (run inside the container)
Fails on any setting it cannot reproduce, so the test never runs something laxer than the pod.
"""
import shlex
import sys

import yaml


def fail(message):
    sys.exit(f"pod_settings: {message}")


def main():
    pod_file, config_file, host_root, engine = sys.argv[1:5]
    with open(pod_file) as f:
        pod = yaml.safe_load(f)
    with open(config_file) as f:
        config = yaml.safe_load(f)
    spec = pod["spec"]
    (container,) = spec["containers"]
    pod_security = spec.get("securityContext", {})
    security = {**pod_security, **container.get("securityContext", {})}

    for key in ("hostPID", "hostIPC", "shareProcessNamespace"):
        if spec.get(key):
            fail(f"{key} is not reproduced")
    if security.get("privileged") or security.get("allowPrivilegeEscalation") is not False:
        fail("the container must be unprivileged without privilege escalation")
    if security.get("capabilities", {}).get("add") or security.get("capabilities", {}).get("drop") != ["ALL"]:
        fail("capabilities must be drop: [ALL] with nothing added")
    if security.get("readOnlyRootFilesystem") is not True:
        fail("readOnlyRootFilesystem must be true")
    if security.get("seccompProfile", {}).get("type") != "RuntimeDefault":
        fail("seccompProfile must be RuntimeDefault (the engine's default profile)")
    uid, gid = security.get("runAsUser"), security.get("runAsGroup")
    if not isinstance(uid, int) or not isinstance(gid, int) or uid == 0:
        fail("runAsUser/runAsGroup must be set and non-root")
    if security.get("runAsNonRoot") is not True:
        fail("runAsNonRoot must be true")

    flags = [
        f"--user={uid}:{gid}",
        "--read-only",
        "--cap-drop=ALL",
        "--security-opt=no-new-privileges",
    ]
    if engine == "podman":
        # podman adds writable tmpfs on /tmp, /run and /var/tmp to a read-only container; the
        # kubelet does not.
        flags.append("--read-only-tmpfs=false")
    if spec.get("hostNetwork"):
        flags.append("--network=host")
    else:
        fail("only hostNetwork pods are reproduced")
    flags.append(f"--stop-timeout={spec.get('terminationGracePeriodSeconds', 30)}")

    volumes = {v["name"]: v for v in spec.get("volumes", [])}
    mounts = []
    for mount in container.get("volumeMounts", []):
        host_path = volumes[mount["name"]].get("hostPath", {}).get("path")
        if host_path is None:
            fail(f"volume {mount['name']} is not a hostPath")
        host = host_root + host_path
        mounts.append((mount["mountPath"], host))
        flags.append(f"--volume={host}:{mount['mountPath']}" + (":ro" if mount.get("readOnly") else ""))

    def on_host(path):
        for inside, host in mounts:
            if path == inside or path.startswith(inside + "/"):
                return host + path[len(inside):]
        fail(f"{path} is not on a mounted volume")

    command = container["command"]
    config_path = command[command.index("--config") + 1]
    state = config["backend"]["local"]["state_dir"]
    out = {
        "uid": str(uid),
        "gid": str(gid),
        "socket": on_host(config["socket"]),
        "state_dir": on_host(state),
        "config_file": on_host(config_path),
    }
    for name, value in out.items():
        print(f"{name}={shlex.quote(value)}")
    print("run_flags=(" + " ".join(shlex.quote(f) for f in flags) + ")")
    print("pod_command=(" + " ".join(shlex.quote(c) for c in command) + ")")
    probe = container["livenessProbe"]["exec"]["command"]
    print("probe_command=(" + " ".join(shlex.quote(c) for c in probe) + ")")


if __name__ == "__main__":
    main()
