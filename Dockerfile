# tether serve in a container: built in one stage, run from a distroless
# image (no shell, no package manager) as a non-root user.
#
#   docker build -t tether .
#   docker run -p 8787:8787 -v $PWD/serve.toml:/etc/tether/serve.toml:ro \
#     -v tether-data:/var/lib/tether -e TETHER_API_TOKEN=… tether
#
# Connector modules are not baked in: mount them (or build an image FROM
# this one that copies them) where the config file's `module` points.

FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p tether-host --bin tether

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /src/target/release/tether /usr/local/bin/tether
ENV TETHER_CONFIG=/etc/tether/serve.toml \
    XDG_CACHE_HOME=/var/lib/tether/cache
USER nonroot
EXPOSE 8787
# Listen on every interface inside the container; the Service and a
# NetworkPolicy decide who reaches it.
ENTRYPOINT ["/usr/local/bin/tether", "serve"]
CMD ["--listen", "0.0.0.0:8787", "--log-format", "json"]
