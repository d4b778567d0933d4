# syntax=docker/dockerfile:1
# Build stage: compile TypeScript, then drop dev dependencies.
FROM node:20-bookworm-slim AS build
WORKDIR /app
COPY package.json package-lock.json ./
RUN npm ci --no-audit --no-fund
COPY tsconfig.json ./
COPY shared ./shared
COPY supervisor ./supervisor
COPY workers ./workers
COPY test ./test
RUN npx tsc -p tsconfig.json && npm prune --omit=dev

# Runtime stage: compiled JS and production dependencies only, as a non-root user.
FROM node:20-bookworm-slim
ENV NODE_ENV=production \
    DATA_DIR=/var/lib/sia
WORKDIR /app
COPY --from=build /app/package.json ./
COPY --from=build /app/node_modules ./node_modules
COPY --from=build /app/dist/shared ./dist/shared
COPY --from=build /app/dist/supervisor ./dist/supervisor
COPY --from=build /app/dist/workers ./dist/workers
RUN mkdir -p /var/lib/sia && chown node:node /var/lib/sia
USER node
EXPOSE 8080 9998 9999
# Exec form, node as PID 1's only process: SIGTERM from the kubelet reaches the supervisor directly.
STOPSIGNAL SIGTERM
ENTRYPOINT ["node", "dist/supervisor/cli.js"]
