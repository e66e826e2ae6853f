# syntax=docker/dockerfile:1
# Build a static relay binary, then ship it alone on distroless as a non-root user.
FROM golang:1.26 AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
ARG VERSION=dev
RUN CGO_ENABLED=0 GOOS=linux go build -trimpath -ldflags "-s -w -X main.version=${VERSION}" -o /out/relay ./cmd/relay

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/relay /usr/local/bin/relay
COPY configs/relay.yaml /etc/relay/relay.yaml
USER nonroot:nonroot
# Probes and Prometheus reach the pod IP, not loopback.
ENV RELAY_HTTP_LISTEN=:9090
EXPOSE 9090
# No HEALTHCHECK: orchestrators probe /healthz and /readyz on http.listen.
ENTRYPOINT ["/usr/local/bin/relay"]
CMD ["run", "--config", "/etc/relay/relay.yaml"]
