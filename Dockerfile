# syntax=docker/dockerfile:1
# One image for every Procfile process (web, worker, release); compose picks the command.
# The TypeScript runs through tsx (a production dependency), so there is no compile step to ship.

# --- production dependencies only (sharp brings its prebuilt libvips for linux-x64/arm64 glibc)
FROM node:20-bookworm-slim AS deps
WORKDIR /app
ENV NODE_ENV=production
COPY package.json package-lock.json ./
RUN npm ci --omit=dev --no-audit --no-fund && npm cache clean --force

# --- optional gate: `docker build --target check .` type-checks with the dev dependencies; not part of the runtime image
FROM node:20-bookworm-slim AS check
WORKDIR /app
COPY package.json package-lock.json ./
RUN npm ci --no-audit --no-fund
COPY . .
RUN npm run typecheck

# --- runtime: source, production node_modules, a non-root user
FROM node:20-bookworm-slim AS runtime
WORKDIR /app
ENV NODE_ENV=production \
    HOST=0.0.0.0 \
    PORT=3000 \
    STORAGE_DIR=/app/var/files \
    MAIL_DIR=/app/var/mail
# Code and dependencies belong to root and are read-only for the app; only var/ (files, mail) is writable.
COPY --from=deps /app/node_modules ./node_modules
COPY package.json package-lock.json Procfile tsconfig.json ./
COPY src ./src
COPY migrations ./migrations
RUN mkdir -p /app/var/files /app/var/mail && chown -R node:node /app/var
USER node
EXPOSE 3000 9464
# The processes handle SIGTERM themselves (stop taking work, finish what runs); compose adds an init for PID 1.
CMD ["node", "--import", "tsx", "--import", "./src/tracing/register.ts", "src/api/server.ts"]
