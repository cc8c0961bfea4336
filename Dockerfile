# syntax=docker/dockerfile:1
FROM rust:1.95-slim-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
# The workspace members must be present for cargo to read the workspace; only cf-bridge is built.
COPY crates ./crates
RUN cargo build --release --locked --bin cf-bridge

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --home /var/lib/cf-bridge --create-home cfbridge
COPY --from=build /src/target/release/cf-bridge /usr/local/bin/cf-bridge
COPY templates /opt/cf-bridge/templates
COPY hooks /opt/cf-bridge/hooks
COPY cf-bridge.example.toml /opt/cf-bridge/cf-bridge.example.toml
USER cfbridge
WORKDIR /var/lib/cf-bridge
ENV CF_BRIDGE__RECONCILE__TEMPLATES_DIR=/opt/cf-bridge/templates \
    CF_BRIDGE__JOURNAL__PATH=/var/lib/cf-bridge/cf-bridge.db \
    CF_BRIDGE__LOG__FORMAT=json
EXPOSE 8088
ENTRYPOINT ["cf-bridge"]
CMD ["serve"]
