# syntax=docker/dockerfile:1
# docker build \
#   --build-arg VERSION="$(node -p 'require("./package.json").version')" \
#   --build-arg REVISION="$(git rev-parse HEAD)" \
#   --build-arg CREATED="$(date -u +%Y-%m-%dT%H:%M:%SZ)" -t sia-supervisor .
ARG NODE_IMAGE=node:26-trixie-slim

# Build stage: every dependency, the product compiled (the tests are not even copied in), then the
# dev dependencies dropped.
FROM ${NODE_IMAGE} AS build
WORKDIR /app
COPY package.json package-lock.json ./
RUN npm ci --no-audit --no-fund
COPY tsconfig.json ./
COPY scripts/bundle.mjs ./scripts/
COPY scripts/bundle-stubs ./scripts/bundle-stubs
COPY shared ./shared
COPY supervisor ./supervisor
COPY workers ./workers
# tsc, then one bundle a thread (scripts/bundle.mjs), then the dev dependencies dropped.
RUN npm run build && npm prune --omit=dev --no-audit --no-fund

# Runtime stage: compiled JS and production dependencies only, as a non-root user.
FROM ${NODE_IMAGE}
ARG NODE_IMAGE
ARG VERSION=""
ARG REVISION=""
ARG CREATED=""
LABEL org.opencontainers.image.title="sia-supervisor" \
      org.opencontainers.image.description="Identity and alerting sidecar: SIA refresh mode and an AlertManager gateway, one worker thread per service" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.created="${CREATED}" \
      org.opencontainers.image.base.name="docker.io/library/${NODE_IMAGE}"
ENV NODE_ENV=production \
    DATA_DIR=/var/lib/sia \
    NODE_COMPILE_CACHE=/app/.compile-cache
WORKDIR /app
COPY --from=build /app/package.json ./
COPY --from=build /app/node_modules ./node_modules
COPY --from=build /app/dist ./dist
# tini as PID 1 (the ENTRYPOINT): a signal that comes before node has run a line of ours is still
# delivered (PID 1 gets no signal it has no handler for, and node's own boot takes tens of ms).
RUN apt-get update \
    && apt-get install -y --no-install-recommends tini \
    && rm -rf /var/lib/apt/lists/*
# The image's `node` user, by number, so that runAsNonRoot can verify it. Only DATA_DIR is written.
RUN mkdir -p /var/lib/sia /app/.compile-cache && chown 1000:1000 /var/lib/sia /app/.compile-cache
USER 1000:1000
# Node's compile cache, filled here: boot once (to ready, then SIGTERM) as the user the image runs
# as (the cache is per uid), so that every start of the image loads its modules compiled already,
# also from a read-only root file system (time to ready -14% measured; an empty cache costs more
# than none). With the ENTRYPOINT's node flags: V8 keeps code compiled under other flags apart.
RUN set -eu; \
    DATA_DIR=/tmp/warm-up TOKEN_SERVER_ADDR=127.0.0.1:0 GATEWAY_ADDR=127.0.0.1:0 \
      METRICS_SERVER_ADDR=127.0.0.1:0 HEALTH_CHECK_ADDR=127.0.0.1:0 \
      node --disable-sigusr1 --no-memory-pool-share-memory-on-teardown --no-sparkplug --no-maglev \
        dist/supervisor/cli.js > /tmp/warm-up.log & \
    pid=$!; ready=; \
    for _ in $(seq 600); do \
      if grep -q '"event":"supervisor.ready"' /tmp/warm-up.log; then ready=1; break; fi; \
      kill -0 "$pid" 2>/dev/null || break; sleep 0.1; \
    done; \
    kill -TERM "$pid" 2>/dev/null || true; code=0; wait "$pid" || code=$?; \
    [ -n "$ready" ] && [ "$code" = 0 ] || { cat /tmp/warm-up.log; exit 1; }; \
    rm -rf /tmp/warm-up /tmp/warm-up.log
EXPOSE 8080 9998 9999
# Exec form, tini as PID 1 and node its one child, no shell: tini forwards the kubelet's SIGTERM to
# the supervisor, which handles it. As PID 1 node would not get a signal sent before its handlers
# exist (its own boot, tens of ms): a pod deleted as it starts ran until its grace period's
# SIGKILL; now node ends at once (143) or, handlers in place, as always. --disable-sigusr1: SIGUSR1 never
# opens the inspector. --no-memory-pool-share-memory-on-teardown: Node 26's V8 hands the heap pages
# of a thread that ends (a CSR pool thread, a replaced worker) to the pool
# of a live thread, which never gives them back to the system: ~9 MiB of idle RSS after a first
# start, ~40 MiB after a large worker ends (README, Performance). Node 22 has no such flag.
# --no-sparkplug --no-maglev: V8's two middle compilers off, the interpreter and TurboFan kept. At
# boot they compiled what seven threads run a few hundred times once (module loading, logging) on
# V8's helper threads, for nothing the sidecar runs later: restart -5.6 MiB idle RSS, CPU to ready
# -70 ms; request throughput the same, the hot paths still reaching TurboFan (README, Performance).
STOPSIGNAL SIGTERM
ENTRYPOINT ["tini", "--", "node", "--disable-sigusr1", "--no-memory-pool-share-memory-on-teardown", "--no-sparkplug", "--no-maglev", "dist/supervisor/cli.js"]
# Flags given to `docker run IMAGE …` or the pod's args are the CLI's (--help lists them).
CMD []
