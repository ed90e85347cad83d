# One image for every role: `serve` runs api and worker; pass `--roles api` or `--roles worker`
# to split them. Configuration comes from SWITCHBOARD__SECTION__KEY environment variables or a
# mounted file given with --config.
FROM rust:1.95-slim-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bin switchboard

FROM debian:bookworm-slim
RUN useradd --system --uid 10001 --create-home --home-dir /var/lib/switchboard switchboard
COPY --from=build /src/target/release/switchboard /usr/local/bin/switchboard
USER 10001
WORKDIR /var/lib/switchboard
ENV SWITCHBOARD__SERVER__BIND=0.0.0.0:8080 \
    SWITCHBOARD__LOG__FORMAT=json
EXPOSE 8080
HEALTHCHECK --interval=10s --timeout=3s CMD ["/bin/sh", "-c", "exec 3<>/dev/tcp/127.0.0.1/8080"]
ENTRYPOINT ["switchboard"]
CMD ["serve"]
