# Production image of the hearth homeserver: a static binary in an empty (FROM scratch) image.
#
#   docker build -t hearth .
#   docker run -p 8008:8008 -p 8448:8448 -v hearth-data:/data -e HS_SERVER_NAME=example.org hearth
#
# Every option can be set with an HS_* environment variable (docs/configuration.md); the data
# (signing key, SQLite database, embedded NATS store, media) lives in the /data volume.
# docs/complement.md describes the image for the Complement conformance suite.

FROM golang:1.26 AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
ARG VERSION=0.1.0-dev
# Pure Go (modernc.org/sqlite): no cgo, so the binary runs without a libc.
RUN CGO_ENABLED=0 go build -trimpath \
        -ldflags "-s -w -X github.com/hearthmx/homeserver/homeserver.Version=${VERSION}" \
        -o /out/homeserver ./cmd/homeserver \
    && mkdir -p /out/data

FROM scratch
COPY --from=build /etc/ssl/certs/ca-certificates.crt /etc/ssl/certs/ca-certificates.crt
COPY --from=build /out/homeserver /homeserver
# An empty /data owned by the unprivileged user, so that a fresh named volume is writable.
COPY --from=build --chown=65532:65532 /out/data /data
USER 65532:65532
ENV HS_DATA_DIR=/data \
    HS_LISTEN_CLIENT=0.0.0.0:8008
VOLUME /data
EXPOSE 8008 8448
# The server handles SIGTERM itself (it is PID 1 here): it stops accepting, finishes the requests
# under way and exits with status 0.
STOPSIGNAL SIGTERM
ENTRYPOINT ["/homeserver", "run"]
