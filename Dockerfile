# syntax=docker/dockerfile:1
FROM rust:1.95-slim-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
# The workspace members must be present for cargo to read the workspace; only cf-bridge is built.
COPY crates ./crates
# BuildKit caches the registry and target/ between builds; target/ is a cache mount, not part of the
# layer, so the binary is copied out of it.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/usr/local/cargo/git \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin cf-bridge \
 && cp target/release/cf-bridge /usr/local/bin/cf-bridge

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --home /var/lib/cf-bridge --create-home cfbridge
COPY --from=build /usr/local/bin/cf-bridge /usr/local/bin/cf-bridge
COPY templates /opt/cf-bridge/templates
COPY hooks /opt/cf-bridge/hooks
COPY cf-bridge.example.toml /opt/cf-bridge/cf-bridge.example.toml
USER cfbridge
WORKDIR /var/lib/cf-bridge
# Listen on every interface (the default 127.0.0.1 is unreachable from outside a container); the journal
# and the secret store live in the data volume. tests/process/container_runtime.rs runs the binary with
# exactly this environment.
ENV CF_BRIDGE__ADMIN__BIND=0.0.0.0:8088 \
    CF_BRIDGE__RECONCILE__TEMPLATES_DIR=/opt/cf-bridge/templates \
    CF_BRIDGE__JOURNAL__PATH=/var/lib/cf-bridge/cf-bridge.db \
    CF_BRIDGE__SECRETS__STORE_PATH=/var/lib/cf-bridge/cf-bridge-secrets.bin \
    CF_BRIDGE__LOG__FORMAT=json
VOLUME ["/var/lib/cf-bridge"]
EXPOSE 8088
# Ready = the journal is writable and HTTP answers (PocketBase or Coolify being away does not fail it).
HEALTHCHECK --interval=30s --timeout=10s --start-period=20s --retries=3 CMD ["cf-bridge", "healthcheck"]
ENTRYPOINT ["cf-bridge"]
CMD ["serve"]
