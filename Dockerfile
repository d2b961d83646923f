# reactor container image.
#
#   docker build -t reactor .                       # default target `runtime`: compiled binary
#   docker build -t reactor:source --target source . # runs main.ts with the Deno image's deno
#
# No `# syntax=` line on purpose: it makes BuildKit pull docker/dockerfile from Docker Hub, which
# fails on air-gapped builders, and everything below also works with the legacy builder.
#
# glibc only. `deno compile` output is linked against glibc, and the server itself calls
# `Deno.dlopen("libc.so.6")` and relies on glibc's epoll/socket ABI. Alpine/musl has no
# libc.so.6, so neither the binary nor the source target can run on an Alpine base (including
# denoland/deno:alpine-*); keep both images Debian-based (distroless cc is Debian 12 + glibc).
#
# io_uring (`--backend io_uring`/`auto`): Docker >= 25's default seccomp profile denies the
# io_uring syscalls; `auto` then falls back to epoll (one log line), `io_uring` exits 2. To allow it,
# run with a seccomp profile that adds io_uring_setup/enter/register (docs/deploy.md, section 3).
#
# Both base images are ARGs so that a mirror or a locally built stand-in can be used where Docker
# Hub / gcr.io cannot be reached (tests/docker/smoke.sh does exactly that).
ARG DENO_IMAGE=denoland/deno:2.9.6
ARG RUNTIME_IMAGE=gcr.io/distroless/cc-debian12:nonroot

# ---------------------------------------------------------------------------------------------
# deps: sources plus npm dependencies. Shared by `source` and `build`, and kept separate from the
# compile step so that `--target source` never needs denort (the legacy builder builds every
# stage up to the target in file order, so nothing that downloads denort may come before it).
FROM ${DENO_IMAGE} AS deps
WORKDIR /app
# Manifests first: the dependency layer is rebuilt only when they change, not on every edit.
# `deno.lock*` is a glob so the build still works before a lockfile is committed.
COPY deno.json deno.lock* ./
# --frozen when a lockfile exists, so the image gets exactly the locked versions (and the build
# fails instead of silently resolving something newer).
RUN if [ -f deno.lock ]; then deno install --frozen; else deno install; fi
COPY . .
# Pre-cache the whole module graph of main.ts (plus type-check inputs) so the `source` image
# starts with `--cached-only` and never touches the network at run time.
RUN if [ -f deno.lock ]; then deno install --frozen --entrypoint main.ts; \
    else deno install --entrypoint main.ts; fi

# ---------------------------------------------------------------------------------------------
# source: run from source with the Deno image's own deno. For builders that cannot download the
# denort runtime that `deno compile` needs. Same port, signal, user and health check as
# `runtime`, so the Kubernetes manifests work with either image.
FROM deps AS source
# The dependency cache (DENO_DIR, /app/node_modules) was written by root at build time and is
# only read at run time, so the container runs as the same non-root uid as distroless
# `nonroot` and works under a read-only root filesystem.
USER 65532:65532
EXPOSE 8080
# PID 1 graceful shutdown: deno runs as PID 1 without an init. The kernel does not apply default
# signal actions to PID 1, so SIGTERM only works because the server installs its own SIGTERM
# handler: a graceful stop bounded by --shutdown-timeout, then exit 0. With --workers N, PID 1 is
# the supervisor: it passes SIGTERM on to its worker processes and waits for (so reaps) each of
# them before it exits; they spawn nothing, so tini has nothing to add.
STOPSIGNAL SIGTERM
# Exec form: no shell is involved (and distroless has none). The probe exits 0 on HTTP 200.
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 \
  CMD ["deno", "run", "--cached-only", "--allow-ffi", "--allow-env", "--allow-read", "--allow-net", "--allow-run", "/app/main.ts", "probe", "--port", "8080"]
# The permissions of the `compile` task. --allow-run is for --workers N: the supervisor starts
# its workers by re-running Deno.execPath(), whose path differs between Deno images, so it is
# not scoped to one path. No --allow-write.
ENTRYPOINT ["deno", "run", "--cached-only", "--allow-ffi", "--allow-env", "--allow-read", "--allow-net", "--allow-run", "/app/main.ts"]
CMD ["serve", "--app", "http", "--host", "0.0.0.0", "--port", "8080"]

# ---------------------------------------------------------------------------------------------
# build: compile a self-contained binary. `deno task compile` downloads the denort runtime for
# this deno version from Deno's release server, so this stage needs that network access.
FROM deps AS build
RUN deno task compile && ./dist/reactor --version

# ---------------------------------------------------------------------------------------------
# runtime (default, last): only the binary on distroless cc (glibc, libgcc; no shell, no
# package manager). Nothing from node_modules or the source tree is in this image.
FROM ${RUNTIME_IMAGE} AS runtime
COPY --from=build /app/dist/reactor /reactor
# 65532 is distroless `nonroot`; numeric so runAsNonRoot in Kubernetes can verify it.
USER 65532:65532
EXPOSE 8080
# PID 1 graceful shutdown: /reactor is PID 1 (no shell, no init). The kernel does not apply
# default signal actions to PID 1, so `docker stop` / the kubelet's SIGTERM works only because
# the server installs its own SIGTERM handler: a graceful stop bounded by --shutdown-timeout,
# then exit 0. With --workers N, PID 1 is the supervisor: it passes SIGTERM on to its workers
# and waits for (so reaps) each of them; they spawn nothing, so no init is needed.
STOPSIGNAL SIGTERM
# Exec form, because distroless has no /bin/sh. The probe exits 0 only on HTTP 200.
HEALTHCHECK --interval=10s --timeout=3s --start-period=5s --retries=3 \
  CMD ["/reactor", "probe", "--port", "8080"]
ENTRYPOINT ["/reactor"]
CMD ["serve", "--app", "http", "--host", "0.0.0.0", "--port", "8080"]
