#!/usr/bin/env bash
# Build the Dockerfile with podman, run the image and check it; then the compose stack.
#
#   deploy/container-test.sh [--install] [--gpu]
#
#   --install   apt-get install Debian's podman, buildah, runc and debootstrap when missing
#   --gpu       also build the GPU variant (VARIANT=cuda, several GB of CUDA wheels) and check
#               that it serves on the CPU; nothing here needs or uses a GPU
#
# Environment:
#   PYTHON_IMAGE    base image for both variants (default: a Debian bookworm stand-in made with
#                   debootstrap and reused while podman still has it, for machines that cannot
#                   pull python:3.11-slim-bookworm; where it can be pulled, give
#                   PYTHON_IMAGE=docker.io/library/python:3.11-slim-bookworm)
#   DEBIAN_MIRROR   archive for debootstrap (default: the bookworm entry of the apt sources)
#
# Checks, in order (each one a line "ok  ..." or the script stops with "FAILED ..."):
#   CPU image: /health/ready; the tutorial's /grad gradient; a malformed body and an unknown op
#   get their 400/422 JSON error and the container stays healthy (ready, /grad, HEALTHCHECK);
#   every process runs as the non-root user; a network registered with POST /networks is still
#   there after the container is replaced by a new one on the same named volume; SIGTERM while
#   a slow /grad runs: new requests get 503 "draining", the slow one finishes with 200 and the
#   container exits 0. Then `podman-compose --profile cpu up`, the same /grad, `down`.
#
# Everything it starts is removed on exit (containers, volume, compose project, dangling images
# of its builds), pass or fail; the images gradserve:cpu (and :cuda) and the stand-in base stay.
# Containers use the host's network (loopback, free ports): no bridge, no iptables rules.
# Logs of the builds and containers: var/container-test/.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$PWD

INSTALL=0
GPU=0
for arg in "$@"; do
    case $arg in
        --install) INSTALL=1 ;;
        --gpu) GPU=1 ;;
        -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        *) echo "unknown argument: $arg (see --help)" >&2; exit 2 ;;
    esac
done

STANDIN=localhost/gradserve-ci/python:3.11-bookworm
IMAGE_CPU=localhost/gradserve:cpu     # the name docker-compose.yml's gradserve-cpu uses
IMAGE_CUDA=localhost/gradserve:cuda
COMPOSE_VERSION=1.6.0                 # Debian's podman-compose (1.0.3) has no --profile
RUN=gradserve-ct-$$
LOGS=$ROOT/var/container-test
CHECKS=(python3 "$ROOT/deploy/container_checks.py")
T_START=$EPOCHREALTIME
SUMMARY=()

log() { printf '[%s] %s\n' "$(date -u +%H:%M:%S)" "$*"; }
ok() { log "ok  $*"; }
fail() { log "FAILED $*"; exit 1; }
elapsed() { awk -v a="$1" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.1f", b - a }'; }
free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
mb() { awk -v b="$1" 'BEGIN { printf "%.0f MB", b / 1e6 }'; }

# -- prerequisites -------------------------------------------------------------------------------
[ "$(id -u)" = 0 ] || fail "run as root: rootful podman, and debootstrap for the stand-in base image"
command -v python3 >/dev/null || fail "python3 is needed for the HTTP checks"
need=(podman runc)
[ -n "${PYTHON_IMAGE:-}" ] || need+=(debootstrap)
missing=()
for tool in "${need[@]}"; do command -v "$tool" >/dev/null || missing+=("$tool"); done
if [ ${#missing[@]} -gt 0 ]; then
    [ "$INSTALL" = 1 ] || fail "missing: ${missing[*]} (apt-get install podman buildah runc debootstrap, or pass --install)"
    log "installing Debian's podman, buildah, runc, debootstrap"
    t=$EPOCHREALTIME
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -q --no-install-recommends podman buildah runc debootstrap >/dev/null \
        || { apt-get update -q >/dev/null && apt-get install -y -q --no-install-recommends podman buildah runc debootstrap >/dev/null; }
    SUMMARY+=("apt-get install         $(elapsed "$t") s")
fi
mkdir -p "$LOGS"
TMP=$(mktemp -d /tmp/gradserve-ct.XXXXXX)

# crun fails on this kind of host's cgroup layout, runc works; podman also needs explicit ulimits
# there. A private containers.conf, so the machine's own configuration is left alone.
cat >"$TMP/containers.conf" <<'EOF'
[containers]
default_ulimits = ["nofile=20000:20000", "nproc=32768:32768"]
[engine]
runtime = "runc"
EOF
export CONTAINERS_CONF=$TMP/containers.conf

dangling() { podman images --quiet --no-trunc --filter dangling=true 2>/dev/null | sort -u; }
DANGLING_BEFORE=$(dangling)
COMPOSE=()
cleanup() {
    local rc=$? t=$EPOCHREALTIME
    set +e
    if [ ${#COMPOSE[@]} -gt 0 ]; then
        timeout 120 "${COMPOSE[@]}" down --volumes --timeout 10 >>"$LOGS/compose.log" 2>&1
    fi
    for c in "$RUN-a" "$RUN-b" "$RUN-cuda"; do
        podman container exists "$c" 2>/dev/null && podman rm --force --volumes --time 5 "$c" >/dev/null 2>&1
    done
    podman volume exists "$RUN-data" 2>/dev/null && podman volume rm --force "$RUN-data" >/dev/null 2>&1
    # intermediate (builder-stage) and replaced images of this run's builds
    comm -13 <(printf '%s\n' "$DANGLING_BEFORE") <(dangling) | xargs -r podman rmi --force >/dev/null 2>&1
    # the bind mounts of the host's pip folders, and /proc of a debootstrap cut short: unmounted
    # first, never deleted through
    findmnt -rn -o TARGET | grep "^$TMP/" | sort -r | xargs -r umount -l 2>/dev/null
    if findmnt -rn -o TARGET | grep -q "^$TMP/"; then
        log "mounts are left under $TMP: not removing it"
    else
        rm -rf --one-file-system "$TMP"
    fi
    log "cleaned up in $(elapsed "$t") s; total $(elapsed "$T_START") s"
    [ $rc = 0 ] || log "container test FAILED (rc=$rc); logs in $LOGS"
    exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# -- the base image ------------------------------------------------------------------------------
debian_mirror() {
    # The bookworm archive of this machine's apt sources (deb822 .sources or one-line .list).
    python3 - <<'EOF'
import glob, re
uris = []
for path in sorted(glob.glob("/etc/apt/sources.list.d/*.sources")):
    for para in re.split(r"\n\s*\n", open(path).read()):
        fields = dict(re.findall(r"^([A-Za-z-]+):\s*(.*)$", para, re.M))
        if "bookworm" in fields.get("Suites", "").split() and "main" in fields.get("Components", "").split():
            uris += fields.get("URIs", "").split()
for path in ["/etc/apt/sources.list", *sorted(glob.glob("/etc/apt/sources.list.d/*.list"))]:
    try:
        text = open(path).read()
    except OSError:
        continue
    uris += re.findall(r"^deb\s+(?:\[[^]]*\]\s+)?(\S+)\s+bookworm\s.*\bmain\b", text, re.M)
print(next((u for u in uris if u.startswith(("http://", "https://"))), "http://deb.debian.org/debian"))
EOF
}

if [ -n "${PYTHON_IMAGE:-}" ]; then
    BASE=$PYTHON_IMAGE
    SUMMARY+=("base image              $BASE (given)")
elif podman image exists "$STANDIN"; then
    BASE=$STANDIN
    SUMMARY+=("base image              $BASE (reused, made $(podman image inspect --format '{{.Created}}' "$STANDIN" | cut -c1-19))")
    ok "stand-in base image $STANDIN is still here: reused"
else
    BASE=$STANDIN
    mirror=${DEBIAN_MIRROR:-$(debian_mirror)}
    log "making the stand-in base image $STANDIN: debootstrap bookworm from $mirror"
    t=$EPOCHREALTIME
    # python3.11-venv depends on python3.11-distutils, which only python3-distutils provides:
    # debootstrap's resolver does not follow virtual packages, so it is named here.
    timeout 900 debootstrap --variant=minbase --include=python3.11,python3.11-venv,python3-distutils,ca-certificates \
        bookworm "$TMP/rootfs" "$mirror" >"$LOGS/debootstrap.log" 2>&1 \
        || { tail -20 "$LOGS/debootstrap.log"; fail "debootstrap (log: $LOGS/debootstrap.log)"; }
    t_deboot=$(elapsed "$t")
    rm -rf "$TMP/rootfs/var/cache/apt/archives/"*.deb "$TMP/rootfs/var/lib/apt/lists/"* "$TMP/rootfs/debootstrap"
    t=$EPOCHREALTIME
    # The official image's PATH and LANG; everything else comes from the Dockerfile.
    tar -C "$TMP/rootfs" --numeric-owner -c . | podman import \
        --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
        --change 'ENV LANG=C.UTF-8' --change 'CMD ["python3.11"]' \
        --message "gradserve CI stand-in for python:3.11-slim-bookworm (debootstrap, $mirror)" \
        - "$STANDIN" >/dev/null 2>"$LOGS/import.log" || fail "podman import: $(cat "$LOGS/import.log")"
    rm -rf --one-file-system "$TMP/rootfs"
    SUMMARY+=("base image              $STANDIN made: debootstrap $t_deboot s, import $(elapsed "$t") s, $(mb "$(podman image inspect --format '{{.Size}}' "$STANDIN")")")
    ok "stand-in base image made (debootstrap $t_deboot s)"
fi

# -- pip inside the build: the host's configuration and CA bundle, mounted, never in a layer ------
# deploy/pip_settings.py writes the host's pip settings into a folder that is mounted over the
# build's /root (HOME of the RUN steps), with the paths they name copied or bind-mounted under
# it; the mount leaves nothing in any layer (see that file).
PIP_MOUNTS=()
if python3 -m pip --version >/dev/null 2>&1; then
    mkdir -p "$TMP/pip-home"
    out=$(python3 "$ROOT/deploy/pip_settings.py" "$TMP/pip-home") || fail "preparing the host's pip settings for the build"
    PIP_MOUNTS=(--volume "$TMP/pip-home:/root:ro")
    log "pip in the build uses the host's settings: $out"
else
    log "no pip on the host: the build uses pip's defaults"
fi

build() {  # variant tag timeout
    local variant=$1 tag=$2 limit=$3 t
    log "building $tag (VARIANT=$variant, PYTHON_IMAGE=$BASE)"
    t=$EPOCHREALTIME
    # --format docker keeps HEALTHCHECK (OCI images have no such field); buildah 1.28 needs
    # VARIANT passed even though the Dockerfile defaults it (else it takes FROM base-${VARIANT}
    # for an image to pull, not for the stage); --network host: no bridge needed.
    # --layers=false: no per-step cache images left behind (each run builds from the base).
    timeout "$limit" podman build --format docker --network host --layers=false --force-rm \
        --build-arg "VARIANT=$variant" --build-arg "PYTHON_IMAGE=$BASE" \
        "${PIP_MOUNTS[@]}" --tag "$tag" --file Dockerfile . >"$LOGS/build-$variant.log" 2>&1 \
        || { tail -30 "$LOGS/build-$variant.log"; fail "podman build VARIANT=$variant (log: $LOGS/build-$variant.log)"; }
    BUILD_S=$(elapsed "$t")
    BUILD_SIZE=$(mb "$(podman image inspect --format '{{.Size}}' "$tag")")
    ok "built $tag in $BUILD_S s, $BUILD_SIZE"
}

check() {  # description, then the container_checks.py arguments
    local what=$1 out
    shift
    out=$("${CHECKS[@]}" "$@") || fail "$what"
    ok "$what: $out"
    LAST=$out
}

# podman without systemd says "unable to get systemd connection" for every healthcheck timer
# it cannot create or remove: harmless here (the checks run the healthcheck by hand), so podman's
# own messages go to a log file.
PODMAN_LOG=$LOGS/podman.log
: >"$PODMAN_LOG"

start() {  # container name, port: the CPU image on the named volume
    podman run --detach --name "$1" --network host --env "GRADSERVE_PORT=$2" \
        --volume "$RUN-data:/data" "$IMAGE_CPU" >/dev/null 2>>"$PODMAN_LOG" \
        || fail "podman run $1: $(tail -3 "$PODMAN_LOG")"
}

# -- the CPU image -------------------------------------------------------------------------------
build cpu "$IMAGE_CPU" 1200
SUMMARY+=("CPU image build         $BUILD_S s, $BUILD_SIZE")

PORT=$(free_port)
URL=http://127.0.0.1:$PORT
podman volume create "$RUN-data" >/dev/null
t=$EPOCHREALTIME
start "$RUN-a" "$PORT"
check "GET /health/ready" ready "$URL" --timeout 120
ready_a=$(elapsed "$t")
check "POST /grad, the tutorial" tutorial "$URL"
check "malformed bodies" malformed "$URL"
podman healthcheck run "$RUN-a" >/dev/null 2>&1 || fail "the image's HEALTHCHECK after the malformed bodies"
state=$(podman inspect --format '{{.State.Running}} {{.RestartCount}}' "$RUN-a")
[ "$state" = "true 0" ] || fail "the container after the malformed bodies: running, restarts = $state"
ok "HEALTHCHECK passes and the container was never restarted"

users=$(podman top "$RUN-a" user | tail -n +2 | sort -u | tr '\n' ' ') || fail "podman top"
pid1_uid=$(podman exec "$RUN-a" awk '/^Uid:/ { print $2, $3, $4, $5 }' /proc/1/status) || fail "podman exec"
if [ "$users" != "gradserve " ] || [ "$pid1_uid" != "10001 10001 10001 10001" ]; then
    fail "non-root: process users '$users', PID 1 uids '$pid1_uid'"
fi
ok "every process runs as gradserve (uid 10001; PID 1 real/effective/saved/fs uids: $pid1_uid)"

check "POST /networks" register "$URL"
NET_ID=$LAST

# SIGTERM during a slow request: it must finish (200), new requests get 503, the exit status is 0.
"${CHECKS[@]}" slow "$URL" >"$TMP/slow.out" 2>&1 &
slow_pid=$!
check "a slow /grad is on the worker" wait-busy "$URL"
podman kill --signal TERM "$RUN-a" >/dev/null
t=$EPOCHREALTIME
check "POST /grad after SIGTERM" draining "$URL"
wait "$slow_pid" || fail "the in-flight request after SIGTERM: $(cat "$TMP/slow.out")"
ok "the request in flight at SIGTERM: $(cat "$TMP/slow.out")"
code=$(timeout 90 podman wait "$RUN-a") || fail "the container did not exit within 90 s of SIGTERM"
podman logs "$RUN-a" >"$LOGS/container-a.log" 2>&1
[ "$code" = 0 ] || fail "exit status after SIGTERM: $code (log: $LOGS/container-a.log)"
! grep -q Traceback "$LOGS/container-a.log" || fail "a traceback in the container log ($LOGS/container-a.log)"
drain_s=$(elapsed "$t")
ok "exit status 0, $drain_s s after SIGTERM"
podman rm --volumes "$RUN-a" >/dev/null 2>>"$PODMAN_LOG"

# A new container on the same named volume still has the network.
t=$EPOCHREALTIME
start "$RUN-b" "$PORT"
check "GET /health/ready (new container, same volume)" ready "$URL" --timeout 120
ready_b=$(elapsed "$t")
check "GET /networks/{id} after the restart" network "$URL" "$NET_ID"
check "POST /grad by network_id after the restart" tutorial "$URL" --network-id "$NET_ID"
code=$(timeout 60 podman stop --time 40 "$RUN-b" >/dev/null 2>>"$PODMAN_LOG" && podman inspect --format '{{.State.ExitCode}}' "$RUN-b")
podman logs "$RUN-b" >"$LOGS/container-b.log" 2>&1
[ "$code" = 0 ] || fail "podman stop: exit status $code (log: $LOGS/container-b.log)"
podman rm --volumes "$RUN-b" >/dev/null 2>>"$PODMAN_LOG"
podman volume rm "$RUN-data" >/dev/null
SUMMARY+=("container ready         $ready_a s (first start), $ready_b s (new container, same volume)")
SUMMARY+=("SIGTERM to exit 0       $drain_s s (one slow request in flight)")

# -- the compose stack ---------------------------------------------------------------------------
PC=$ROOT/var/ci/podman-compose-$COMPOSE_VERSION/bin/podman-compose
if ! "$PC" version >/dev/null 2>&1; then
    log "installing podman-compose $COMPOSE_VERSION into var/ci/ (Debian's has no --profile)"
    rm -rf "$ROOT/var/ci/podman-compose-$COMPOSE_VERSION"
    python3 -m venv "$ROOT/var/ci/podman-compose-$COMPOSE_VERSION"
    timeout 300 "$ROOT/var/ci/podman-compose-$COMPOSE_VERSION/bin/pip" install -q "podman-compose==$COMPOSE_VERSION" \
        >"$LOGS/pip-podman-compose.log" 2>&1 || fail "pip install podman-compose==$COMPOSE_VERSION: $(tail -5 "$LOGS/pip-podman-compose.log")"
fi
# The compose file as it is, plus the host network on a free port: the service then listens on
# GRADSERVE_PORT directly (the published-port mapping is left out, it would need a bridge).
cat >"$TMP/compose.host-network.yml" <<EOF
services:
  gradserve-cpu:
    network_mode: host
    ports: !reset []
    environment:
      GRADSERVE_PORT: "$PORT"
EOF
COMPOSE=("$PC" --project-name "$RUN" --file docker-compose.yml --file "$TMP/compose.host-network.yml" --profile cpu)
t=$EPOCHREALTIME
timeout 300 "${COMPOSE[@]}" up --detach --no-build >"$LOGS/compose.log" 2>&1 \
    || { tail -20 "$LOGS/compose.log"; fail "podman-compose --profile cpu up"; }
services=$(podman ps --filter "label=io.podman.compose.project=$RUN" --format '{{.Labels}}' | grep -o 'io.podman.compose.service:[a-z-]*' | sort -u | tr '\n' ' ')
[ "$services" = "io.podman.compose.service:gradserve-cpu " ] || fail "compose started: '$services' (only gradserve-cpu expected)"
ok "podman-compose --profile cpu up: gradserve-cpu only"
check "GET /health/ready (compose)" ready "$URL" --timeout 120
ready_c=$(elapsed "$t")
check "POST /grad, the tutorial (compose)" tutorial "$URL"
cname=$(podman ps --filter "label=io.podman.compose.project=$RUN" --format '{{.Names}}')
podman healthcheck run "$cname" >/dev/null 2>&1 || fail "the compose healthcheck"
ok "the compose healthcheck passes"
timeout 120 "${COMPOSE[@]}" down --volumes --timeout 40 >>"$LOGS/compose.log" 2>&1 || fail "podman-compose down"
COMPOSE=()
left=$(podman ps -a --filter "label=io.podman.compose.project=$RUN" --quiet; podman volume ls --quiet | grep "^${RUN}_" || true)
[ -z "$left" ] || fail "left after podman-compose down: $left"
ok "podman-compose down: no container or volume left"
SUMMARY+=("compose up to ready     $ready_c s")

# -- the GPU image (opt-in) ----------------------------------------------------------------------
if [ "$GPU" = 1 ]; then
    build cuda "$IMAGE_CUDA" 3600
    SUMMARY+=("GPU image build         $BUILD_S s, $BUILD_SIZE")
    podman run --rm --network none "$IMAGE_CUDA" python -c \
        'import importlib.metadata as m, jax_plugins.xla_cuda12; print("jax-cuda12-plugin", m.version("jax-cuda12-plugin"))' \
        >"$TMP/plugin.out" 2>&1 || fail "the CUDA plugin in $IMAGE_CUDA: $(cat "$TMP/plugin.out")"
    ok "$IMAGE_CUDA has $(tail -1 "$TMP/plugin.out")"
    # No GPU here: the same image must still serve on the CPU (GRADSERVE_DEVICE=cpu).
    podman run --detach --name "$RUN-cuda" --network host --env "GRADSERVE_PORT=$PORT" \
        --env GRADSERVE_DEVICE=cpu "$IMAGE_CUDA" >/dev/null 2>>"$PODMAN_LOG"
    check "GET /health/ready ($IMAGE_CUDA on the CPU)" ready "$URL" --timeout 180
    check "POST /grad, the tutorial ($IMAGE_CUDA on the CPU)" tutorial "$URL"
    podman logs "$RUN-cuda" >"$LOGS/container-cuda.log" 2>&1
    podman rm --force --volumes --time 40 "$RUN-cuda" >/dev/null 2>>"$PODMAN_LOG"
fi

SUMMARY+=("total before cleanup    $(elapsed "$T_START") s")
log "container test passed"
printf '  %s\n' "${SUMMARY[@]}"
