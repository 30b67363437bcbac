# Sourced by deploy/build-image.sh and tests/container.sh: picks the container engine.
#
# Sets ENGINE (the command and its global flags, as an array) and ENGINE_LIMITS (flags for
# `build` and `run`).
# Docker when its engine answers, else podman; KMS_CONTAINER_ENGINE=docker|podman forces one.
# podman asks the runtime for open-file and process limits above those of the calling process
# by default, which fails without CAP_SYS_RESOURCE (CI sandboxes: "error setting rlimits");
# ENGINE_LIMITS passes the caller's own limits instead. Limits are not part of a pod spec, so
# this changes nothing the static pod sets.

engine_pick() {
    local wanted=${KMS_CONTAINER_ENGINE:-}
    ENGINE=()
    ENGINE_LIMITS=()
    if [ -z "$wanted" ]; then
        if command -v docker >/dev/null 2>&1 && docker info >/dev/null 2>&1; then
            wanted=docker
        elif command -v podman >/dev/null 2>&1; then
            wanted=podman
        else
            return 1
        fi
    fi
    command -v "$wanted" >/dev/null 2>&1 || return 1
    ENGINE=("$wanted")
    if [ "$wanted" = podman ]; then
        # runc where installed: crun fails in some sandboxes where runc works. Without systemd as
        # init there is no systemd cgroup manager to talk to.
        command -v runc >/dev/null 2>&1 && ENGINE+=(--runtime runc)
        [ -d /run/systemd/system ] || ENGINE+=(--cgroup-manager cgroupfs)
        local nofile nproc
        nofile=$(ulimit -Hn)
        nproc=$(ulimit -Hu)
        [ "$nofile" = unlimited ] && nofile=1048576
        # Seen in a CI sandbox: runc could not set RLIMIT_NPROC to 65536 although our hard limit
        # was higher; 4096 is far above the plugin's few dozen threads.
        if [ "$nproc" = unlimited ] || [ "$nproc" -gt 4096 ]; then nproc=4096; fi
        ENGINE_LIMITS=(--ulimit "nofile=$nofile:$nofile" --ulimit "nproc=$nproc:$nproc")
    fi
}
