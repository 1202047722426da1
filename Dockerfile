# hubcast's container image: built from source, run as a non-root user on
# a slim Debian.
#
#   docker build -t hubcast .            (or: podman build -t hubcast .)
#   docker run -p 8080:8080 -e HUBCAST_JWT_SECRET=... hubcast
#
# Settings come from HUBCAST_* variables (README, "Run it") or a mounted
# file: `-v ./hubcast.toml:/etc/hubcast/hubcast.toml:ro` and the command
# `serve --config /etc/hubcast/hubcast.toml`. deploy/ has a compose file,
# a systemd unit and Kubernetes manifests; scripts/test-deploy runs this
# file's runtime stage, with the binary cargo built, in podman.

FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p hubcast --bin hubcast \
 && install -m 0755 target/release/hubcast /hubcast

# What the runtime needs besides the binary: curl for the HEALTHCHECK, and
# the user it runs as (no login, no home, a fixed uid for volume owners).
FROM debian:bookworm-slim AS runtime-base
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates curl \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --uid 10001 --user-group --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin hubcast

FROM runtime-base AS runtime
COPY --from=build /hubcast /usr/local/bin/hubcast
USER hubcast:hubcast
# Outside loopback the server needs tokens (HUBCAST_JWT_SECRET, ...) or
# HUBCAST_ANONYMOUS=true; it refuses to start until one is chosen.
ENV HUBCAST_LISTEN=0.0.0.0:8080 \
    HUBCAST_LOG_FORMAT=json
EXPOSE 8080
# The port is HUBCAST_LISTEN's (set the listen address there, not only in
# a file). /healthz answers 200 while the process serves, even while it
# drains (/readyz is the load balancer's check).
HEALTHCHECK --interval=10s --timeout=3s --start-period=5s --retries=3 \
  CMD curl -fsS -o /dev/null "http://127.0.0.1:${HUBCAST_LISTEN##*:}/healthz" || exit 1
# Exec form: hubcast is PID 1 and gets SIGTERM itself (then drains and
# exits 0); no shell in between to swallow it.
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/hubcast"]
CMD ["serve"]
