# bluegreen's image, and the PgBouncer image its manifests run (scripts/deploy/k8s/).
#   docker build -t bluegreen:0.1.0 .                                   # bluegreen (last stage)
#   docker build --build-arg PG_MAJOR=16 -t bluegreen:0.1.0-pg16 .    # source on PostgreSQL 16
#   docker build --target pgbouncer -t pgbouncer:1.18 .                # PgBouncer 1.18
# Nothing secret goes in: credentials arrive at run time from a Kubernetes Secret (pgpass).

ARG RUST_VERSION=1.95
ARG DEBIAN=bookworm

# --- build: the release binary, against the locked dependencies ---
FROM rust:${RUST_VERSION}-${DEBIAN} AS builder
WORKDIR /src
COPY . .
# Plain RUN (no BuildKit cache mounts), so ACR Tasks and the classic builder build it too.
RUN cargo build --release --locked -p bluegreen \
    && install -m 0755 target/release/bluegreen /usr/local/bin/bluegreen

# --- common base: Debian slim (glibc, /bin/sh for the init containers) and one non-root user,
# the same uid in both images so the PgBouncer pod's containers share its emptyDirs ---
FROM debian:${DEBIAN}-slim AS base
RUN groupadd --gid 10001 bluegreen \
    && useradd --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
       --shell /usr/sbin/nologin bluegreen

# --- PgBouncer 1.18 (Debian bookworm's, the version bluegreen's tests run against) ---
FROM base AS pgbouncer
RUN apt-get update \
    && apt-get install -y --no-install-recommends pgbouncer ca-certificates \
    && rm -rf /var/lib/apt/lists/*
USER 10001:10001
EXPOSE 6432
ENTRYPOINT ["/usr/sbin/pgbouncer"]
CMD ["/etc/pgbouncer/conf/pgbouncer.ini"]

# --- bluegreen: the binary plus pg_dump of the source's major version (copy runs it for the
# schema; bluegreen picks /usr/lib/postgresql/<source major>/bin/pg_dump) and psql (to look at
# PgBouncer's admin console from the pod). bookworm has 15; other majors come from the
# PostgreSQL project's apt repository, set up by postgresql-common's script ---
FROM base AS runtime
ARG PG_MAJOR=15
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && if [ "$PG_MAJOR" != 15 ]; then \
         apt-get install -y --no-install-recommends postgresql-common \
         && /usr/share/postgresql-common/pgdg/apt.postgresql.org.sh -y; \
       fi \
    && apt-get install -y --no-install-recommends "postgresql-client-$PG_MAJOR" \
    && rm -rf /var/lib/apt/lists/*
COPY --from=builder /usr/local/bin/bluegreen /usr/local/bin/bluegreen
USER 10001:10001
ENTRYPOINT ["/usr/local/bin/bluegreen"]
CMD ["--help"]
