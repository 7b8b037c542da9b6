# clickflow: a multi-stage build. The first stage compiles the release binary (librdkafka is
# built from source with OpenSSL, hence gcc, make, pkg-config, zlib and libssl headers); the
# second is a slim Debian with the binary, the C libraries it links and curl for the health
# check, run as an unprivileged user (uid 10001, owner of /models for a model volume).
#
# Build:  docker build -t clickflow .
# Run:    docker run --rm -p 127.0.0.1:8080:8080 clickflow run --brokers kafka:9092 ...
# (or the whole stack: docker compose up; see docker-compose.yml and the README)

FROM rust:1.95-slim-bookworm AS build
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends gcc g++ make pkg-config zlib1g-dev libssl-dev \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bin clickflow \
    && cp target/release/clickflow /usr/local/bin/clickflow

FROM debian:bookworm-slim
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates curl libssl3 zlib1g \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --user-group --home-dir /var/lib/clickflow --create-home clickflow \
    && mkdir /models && chown 10001:10001 /models
COPY --from=build /usr/local/bin/clickflow /usr/local/bin/clickflow
USER 10001:10001
WORKDIR /var/lib/clickflow
# In a container the server must listen beyond loopback; publish the port on 127.0.0.1 or
# set CLICKFLOW_API_TOKEN_FILE (a secret) before exposing it further.
ENV CLICKFLOW_HTTP=0.0.0.0:8080
EXPOSE 8080
HEALTHCHECK --interval=10s --timeout=3s --start-period=60s --retries=3 \
    CMD ["curl", "-fsS", "http://127.0.0.1:8080/healthz"]
ENTRYPOINT ["clickflow"]
CMD ["--help"]
