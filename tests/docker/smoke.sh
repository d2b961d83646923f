#!/usr/bin/env bash
# Container smoke test: build the image from ../../Dockerfile, run it the way Kubernetes does
# (read-only root, no capabilities, no privilege escalation, tmpfs /tmp), and check it from the
# host over loopback: /health, the / body, the image's HEALTHCHECK, an echo round trip, the
# non-root uid, and that `docker stop` (SIGTERM) ends it with exit code 0 before the kill.
#
# Not part of `deno task test`: it needs root or a Docker engine, and minutes.
#   bash tests/docker/smoke.sh            (deno task test:docker)
#
# Where Docker Hub / gcr.io cannot be reached it builds local stand-ins instead: a minimal
# Debian bookworm from debootstrap (`docker import`), plus deno from the npm registry for the
# Deno image. The `runtime` target also needs the denort download, so in that case it builds
# the `source` target and says so.
#
# Environment (all optional):
#   SMOKE_TARGET=runtime|source   force the target (default: runtime when the real base images
#                                 are available, else source)
#   DENO_IMAGE / RUNTIME_IMAGE    base images (default: the Dockerfile's ARG defaults)
#   SMOKE_DEBIAN_MIRROR           debootstrap mirror [http://deb.debian.org/debian]
#   SMOKE_KEEP=1                  keep the image, and a dockerd this script started
#
# Output: PASS:/FAIL:/NOTE: lines, then `smoke: N passed, N failed`. Exit 0 only if none failed.

# cleanup runs from the EXIT trap and the is_* helpers through wait_for: not unreachable.
# shellcheck disable=SC2317
set -uo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
WORK=$(mktemp -d /tmp/reactor-smoke.XXXXXX)
TAG=reactor:smoke
RUN_ID=$$
HTTP_NAME=reactor-smoke-http-$RUN_ID
ECHO_NAME=reactor-smoke-echo-$RUN_ID
# docker stop waits this long after SIGTERM before SIGKILL (exit 137); the server's own
# shutdown timeout must fit well inside it.
ECHO_SHUTDOWN_TIMEOUT=5
STOP_GRACE=15
DEFAULT_DENO_IMAGE=$(sed -n 's/^ARG DENO_IMAGE=//p' "$REPO/Dockerfile")
DEFAULT_RUNTIME_IMAGE=$(sed -n 's/^ARG RUNTIME_IMAGE=//p' "$REPO/Dockerfile")
DENO_IMAGE=${DENO_IMAGE:-$DEFAULT_DENO_IMAGE}
RUNTIME_IMAGE=${RUNTIME_IMAGE:-$DEFAULT_RUNTIME_IMAGE}
MIRROR=${SMOKE_DEBIAN_MIRROR:-http://deb.debian.org/debian}
STANDIN_BASE=reactor-standin/debian:bookworm

passed=0
failed=0
DOCKERD_PID=

pass() {
  echo "PASS: $*"
  passed=$((passed + 1))
}
fail() {
  echo "FAIL: $*"
  failed=$((failed + 1))
}
note() { echo "NOTE: $*"; }

summary_and_exit() {
  echo "smoke: $passed passed, $failed failed"
  [ "$failed" -eq 0 ]
  exit $?
}

cleanup() {
  docker rm -f "$HTTP_NAME" "$ECHO_NAME" >/dev/null 2>&1
  if [ -z "${SMOKE_KEEP:-}" ]; then
    docker image rm "$TAG" >/dev/null 2>&1
    if [ -n "$DOCKERD_PID" ]; then
      # Only the dockerd this script started, by its pid.
      kill "$DOCKERD_PID" 2>/dev/null
      for _ in $(seq 1 30); do kill -0 "$DOCKERD_PID" 2>/dev/null || break; sleep 1; done
    fi
  fi
  rm -rf "$WORK"
}
trap cleanup EXIT

apt_install() {
  if [ "$(id -u)" -ne 0 ]; then
    fail "need root to apt-get install $*"
    return 1
  fi
  note "installing $* with apt-get"
  DEBIAN_FRONTEND=noninteractive apt-get update -qq >"$WORK/apt.log" 2>&1
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >>"$WORK/apt.log" 2>&1 || {
    tail -n 20 "$WORK/apt.log"
    fail "apt-get install $*"
    return 1
  }
}

# ---------------------------------------------------------------------------------------------
# 1. A Docker engine that answers.

ensure_engine() {
  if ! command -v docker >/dev/null 2>&1; then apt_install docker.io || return 1; fi
  if docker info >/dev/null 2>&1; then
    note "using the running Docker engine"
    return 0
  fi
  if ! command -v dockerd >/dev/null 2>&1; then apt_install docker.io || return 1; fi
  if [ "$(id -u)" -ne 0 ]; then
    fail "no Docker engine answers and starting dockerd needs root"
    return 1
  fi
  note "no Docker engine answers; starting dockerd (log: $WORK/dockerd.log)"
  dockerd >"$WORK/dockerd.log" 2>&1 &
  DOCKERD_PID=$!
  for _ in $(seq 1 60); do
    if docker info >/dev/null 2>&1; then return 0; fi
    if ! kill -0 "$DOCKERD_PID" 2>/dev/null; then break; fi
    sleep 1
  done
  local why
  if kill -0 "$DOCKERD_PID" 2>/dev/null; then
    why="no answer within 60 s"
    kill "$DOCKERD_PID"
  else
    wait "$DOCKERD_PID"
    why="dockerd exited with status $?"
  fi
  wait "$DOCKERD_PID" 2>/dev/null
  DOCKERD_PID=
  # Say exactly why: the engine's own error lines, else the end of its log.
  echo "--- dockerd errors ---"
  grep -E 'level=(error|fatal)|failed to start daemon' "$WORK/dockerd.log" | tail -n 20 ||
    tail -n 30 "$WORK/dockerd.log"
  fail "dockerd did not start: $why"
  return 1
}

# ---------------------------------------------------------------------------------------------
# 2. Base images: the real ones, or local stand-ins.

have_image() { docker image inspect "$1" >/dev/null 2>&1; }

pull() {
  have_image "$1" && return 0
  timeout 180 docker pull -q "$1" >"$WORK/pull.log" 2>&1 && return 0
  note "cannot pull $1: $(tail -n 1 "$WORK/pull.log")"
  return 1
}

# A minimal Debian bookworm (glibc, /bin/sh), the base of all stand-ins.
standin_base() {
  have_image "$STANDIN_BASE" && return 0
  if ! command -v debootstrap >/dev/null 2>&1; then apt_install debootstrap || return 1; fi
  note "debootstrap bookworm from $MIRROR -> $STANDIN_BASE"
  if ! debootstrap --variant=minbase bookworm "$WORK/rootfs" "$MIRROR" >"$WORK/debootstrap.log" 2>&1; then
    tail -n 20 "$WORK/debootstrap.log"
    fail "debootstrap"
    return 1
  fi
  tar -C "$WORK/rootfs" -c . | docker import - "$STANDIN_BASE" >/dev/null || {
    fail "docker import of the debootstrap tree"
    return 1
  }
  rm -rf "$WORK/rootfs"
}

# Like denoland/deno: deno in /usr/bin, DENO_DIR=/deno-dir/, user deno (1993). The binary is
# the one the npm registry ships for this platform (@deno/linux-*-glibc), same version as the tag.
standin_deno() {
  local version=${DENO_IMAGE##*:} pkg tag ctx
  tag=reactor-standin/deno:$version
  if have_image "$tag"; then DENO_IMAGE=$tag; return 0; fi
  standin_base || return 1
  case "$(uname -m)" in
    x86_64) pkg=@deno/linux-x64-glibc ;;
    aarch64) pkg=@deno/linux-arm64-glibc ;;
    *) fail "no deno package for $(uname -m)"; return 1 ;;
  esac
  ctx=$WORK/deno-standin
  mkdir -p "$ctx"
  note "building $tag with deno from npm $pkg@$version"
  if (cd "$ctx" && npm pack --silent "$pkg@$version" >/dev/null 2>"$WORK/npm.log" &&
    tar -xzf ./*.tgz package/deno && mv package/deno deno); then
    :
  elif command -v deno >/dev/null 2>&1 && deno --version | grep -q "^deno $version "; then
    note "npm pack failed ($(tail -n 1 "$WORK/npm.log")); using this machine's deno $version"
    cp "$(readlink -f "$(command -v deno)")" "$ctx/deno"
  else
    fail "no deno $version binary for the stand-in (npm: $(tail -n 1 "$WORK/npm.log"))"
    return 1
  fi
  # The build fetches npm packages from inside the container. Trust what this host trusts, so a
  # TLS-intercepting proxy's CA (which the host has and the stand-in would not) works there too.
  local host_ca=/etc/ssl/certs/ca-certificates.crt ca_lines=""
  if [ -s "$host_ca" ]; then
    cp "$host_ca" "$ctx/host-ca.pem"
    ca_lines="COPY host-ca.pem /etc/ssl/certs/host-ca.pem
ENV DENO_CERT=/etc/ssl/certs/host-ca.pem"
  fi
  cat >"$ctx/Dockerfile" <<EOF
FROM $STANDIN_BASE
COPY deno /usr/bin/deno
RUN chmod 755 /usr/bin/deno && useradd --uid 1993 --user-group deno \\
  && mkdir /deno-dir && chown deno:deno /deno-dir
ENV DENO_DIR=/deno-dir/ DENO_INSTALL_ROOT=/usr/local
$ca_lines
EOF
  docker build -q -t "$tag" "$ctx" >"$WORK/standin-build.log" 2>&1 || {
    tail -n 20 "$WORK/standin-build.log"
    fail "building $tag"
    return 1
  }
  DENO_IMAGE=$tag
}

# Like distroless cc nonroot: glibc and uid 65532 (it has a shell, distroless does not).
standin_runtime() {
  local tag=reactor-standin/distroless-cc:nonroot ctx=$WORK/runtime-standin
  if have_image "$tag"; then RUNTIME_IMAGE=$tag; return 0; fi
  standin_base || return 1
  mkdir -p "$ctx"
  cat >"$ctx/Dockerfile" <<EOF
FROM $STANDIN_BASE
RUN echo 'nonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin' >>/etc/passwd \\
  && echo 'nonroot:x:65532:' >>/etc/group && mkdir -p /home/nonroot \\
  && chown 65532:65532 /home/nonroot
USER 65532:65532
EOF
  docker build -q -t "$tag" "$ctx" >"$WORK/standin-build.log" 2>&1 || {
    fail "building $tag"
    return 1
  }
  RUNTIME_IMAGE=$tag
}

choose_images() {
  local real_deno=0 real_runtime=0
  pull "$DENO_IMAGE" && real_deno=1
  pull "$RUNTIME_IMAGE" && real_runtime=1
  TARGET=${SMOKE_TARGET:-}
  if [ -z "$TARGET" ]; then
    if [ $real_deno = 1 ] && [ $real_runtime = 1 ]; then
      TARGET=runtime
    else
      TARGET=source
      note "base images are not reachable: using local stand-ins, and building the 'source'" \
        "target because 'deno compile' cannot download denort here either"
    fi
  fi
  if [ $real_deno = 0 ]; then standin_deno || return 1; fi
  if [ "$TARGET" = runtime ] && [ $real_runtime = 0 ]; then standin_runtime || return 1; fi
  note "target=$TARGET DENO_IMAGE=$DENO_IMAGE RUNTIME_IMAGE=$RUNTIME_IMAGE"
}

# ---------------------------------------------------------------------------------------------
# 3. Checks against running containers.

# A loopback port below the kernel's ephemeral range (so no outgoing connection holds it as its
# local port) that no socket uses right now.
free_port() {
  local p low
  low=$(awk '{print $1}' /proc/sys/net/ipv4/ip_local_port_range 2>/dev/null || echo 32768)
  for _ in $(seq 1 100); do
    p=$((20000 + RANDOM % (low - 20000)))
    if command -v ss >/dev/null 2>&1; then
      [ -z "$(ss -Htan "( sport = :$p )" 2>/dev/null)" ] && { echo "$p"; return 0; }
    elif ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
      echo "$p"
      return 0
    fi
  done
  return 1
}

# docker run with the restrictions of deploy/kubernetes/deployment.yaml.
run_restricted() {
  local name=$1 port=$2
  shift 2
  docker run -d --name "$name" \
    --read-only --tmpfs /tmp:rw,size=32m \
    --cap-drop ALL --security-opt no-new-privileges \
    -p "127.0.0.1:$port:8080" "$@" >"$WORK/run-$name.log" 2>&1 || {
    cat "$WORK/run-$name.log"
    return 1
  }
}

show_logs() {
  echo "--- docker logs $1 (last 30 lines) ---"
  docker logs --tail 30 "$1" 2>&1
}

http_code() { curl -s -o /dev/null -m 3 -w '%{http_code}' "$1"; }

# One line through the echo server; docker-proxy accepts connections before the server listens,
# so only an echoed line counts as "up". In a subshell: a write to a connection the proxy has
# already closed raises SIGPIPE, which must end this check, not the whole script.
echo_line() (
  port=$1 msg=$2
  exec 3<>"/dev/tcp/127.0.0.1/$port" || exit 1
  printf '%s\n' "$msg" >&3 || exit 1
  IFS= read -r -t 3 line <&3
  [ "$line" = "$msg" ]
)

# wait_for SECONDS COMMAND...: retries COMMAND every 0.25 s until it succeeds.
wait_for() {
  local seconds=$1
  shift
  for _ in $(seq 1 "$((seconds * 4))"); do
    if "$@" >/dev/null 2>&1; then return 0; fi
    sleep 0.25
  done
  return 1
}

is_200() { [ "$(http_code "$1")" = 200 ]; }
is_healthy() { [ "$(docker inspect -f '{{.State.Health.Status}}' "$1")" = healthy ]; }

check_nonroot() {
  local name=$1 user pid uids procs others
  user=$(docker inspect -f '{{.Config.User}}' "$name")
  pid=$(docker inspect -f '{{.State.Pid}}' "$name")
  # The real, effective, saved and filesystem uid of the container's PID 1, read on the host.
  uids=$(awk '/^Uid:/ {print $2, $3, $4, $5}' "/proc/$pid/status" 2>/dev/null)
  # Every process in the container (with --workers, the supervisor and its workers).
  procs=$(docker top "$name" -eo uid,pid 2>/dev/null | awk 'NR > 1' | wc -l)
  others=$(docker top "$name" -eo uid,pid 2>/dev/null | awk 'NR > 1 && $1 != 65532' | wc -l)
  if [ "${user%%:*}" = 65532 ] && [ "$uids" = "65532 65532 65532 65532" ] && [ "$others" = 0 ]; then
    pass "$name runs as non-root (Config.User=$user, PID 1 uids: $uids, $procs processes, all uid 65532)"
  else
    fail "$name non-root: Config.User='$user', PID 1 uids: '$uids', $others of $procs processes not uid 65532"
  fi
}

# docker stop = SIGTERM, then SIGKILL after STOP_GRACE s. Exit 0 before `limit` = graceful.
check_stop() {
  local name=$1 limit=$2 start ms code
  start=$(date +%s%N)
  docker stop -t "$STOP_GRACE" "$name" >/dev/null
  ms=$((($(date +%s%N) - start) / 1000000))
  code=$(docker inspect -f '{{.State.ExitCode}}' "$name")
  if [ "$code" = 0 ] && [ "$ms" -lt $((limit * 1000)) ]; then
    pass "$name: docker stop (SIGTERM) -> exit 0 after ${ms} ms (limit ${limit} s)"
  else
    fail "$name: docker stop -> exit code $code after ${ms} ms (want 0 within ${limit} s)"
    show_logs "$name"
  fi
}

check_image_config() {
  local cfg
  cfg=$(docker image inspect -f \
    '{{.Config.User}}|{{json .Config.ExposedPorts}}|{{.Config.StopSignal}}|{{index .Config.Healthcheck.Test 0}}' \
    "$TAG")
  if [ "$cfg" = '65532:65532|{"8080/tcp":{}}|SIGTERM|CMD' ]; then
    pass "image config: user 65532, port 8080, STOPSIGNAL SIGTERM, exec-form HEALTHCHECK"
  else
    fail "image config: $cfg"
  fi
}

# ---------------------------------------------------------------------------------------------

main() {
  command -v curl >/dev/null 2>&1 || apt_install curl || summary_and_exit
  ensure_engine || summary_and_exit
  pass "Docker engine answers ($(docker version -f '{{.Server.Version}}' 2>/dev/null))"
  choose_images || summary_and_exit

  note "docker build --target $TARGET (log: $WORK/build.log)"
  if docker build -t "$TAG" --target "$TARGET" \
    --build-arg "DENO_IMAGE=$DENO_IMAGE" --build-arg "RUNTIME_IMAGE=$RUNTIME_IMAGE" \
    "$REPO" >"$WORK/build.log" 2>&1; then
    pass "docker build --target $TARGET ($(docker image inspect -f '{{.Size}}' "$TAG" |
      awk '{printf "%.0f MB", $1 / 1e6}'))"
  else
    tail -n 30 "$WORK/build.log"
    fail "docker build --target $TARGET"
    summary_and_exit
  fi
  check_image_config

  # HTTP app with the image's default CMD; the health check every 2 s instead of 10 s.
  local http_port echo_port
  http_port=$(free_port) || { fail "no free port"; summary_and_exit; }
  if run_restricted "$HTTP_NAME" "$http_port" --health-interval 2s --health-start-period 30s "$TAG"; then
    if wait_for 30 is_200 "http://127.0.0.1:$http_port/health"; then
      pass "GET /health -> 200 (127.0.0.1:$http_port -> 8080)"
    else
      fail "GET /health -> $(http_code "http://127.0.0.1:$http_port/health")"
      show_logs "$HTTP_NAME"
    fi
    local body
    body=$(curl -s -m 3 "http://127.0.0.1:$http_port/")
    if [ "$body" = "Hello, World!" ]; then
      pass "GET / -> 'Hello, World!'"
    else
      fail "GET / -> '$body'"
    fi
    if wait_for 30 is_healthy "$HTTP_NAME"; then
      pass "HEALTHCHECK (probe subcommand, exec form) reports healthy"
    else
      fail "HEALTHCHECK status: $(docker inspect -f '{{.State.Health.Status}} {{json .State.Health.Log}}' "$HTTP_NAME" | tail -c 600)"
    fi
    check_nonroot "$HTTP_NAME"
    check_stop "$HTTP_NAME" "$STOP_GRACE"
  else
    fail "docker run $HTTP_NAME"
  fi

  # Echo app with two worker processes, as in deployment.yaml: PID 1 is then the supervisor and
  # must pass SIGTERM on. An idle connection stays open while it stops, so the shutdown timeout
  # matters.
  echo_port=$(free_port) || { fail "no free port"; summary_and_exit; }
  if run_restricted "$ECHO_NAME" "$echo_port" --no-healthcheck "$TAG" \
    serve --app echo --host 0.0.0.0 --port 8080 --workers 2 \
    --shutdown-timeout "$ECHO_SHUTDOWN_TIMEOUT"; then
    if wait_for 30 echo_line "$echo_port" "smoke-$RUN_ID-ready"; then
      if echo_line "$echo_port" "reactor smoke $RUN_ID: bytes come back"; then
        pass "echo round trip over 127.0.0.1:$echo_port"
      else
        fail "echo round trip"
      fi
    else
      fail "echo server did not answer on 127.0.0.1:$echo_port"
      show_logs "$ECHO_NAME"
    fi
    check_nonroot "$ECHO_NAME"
    # Held open, idle, through the stop (the group's 2> only silences a failed connect).
    { exec 4<>"/dev/tcp/127.0.0.1/$echo_port"; } 2>/dev/null || note "no idle connection held"
    check_stop "$ECHO_NAME" "$((ECHO_SHUTDOWN_TIMEOUT + 3))"
    exec 4<&- 4>&-
  else
    fail "docker run $ECHO_NAME"
  fi
  summary_and_exit
}

main "$@"
