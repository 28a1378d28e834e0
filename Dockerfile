# syntax=docker/dockerfile:1
# Multi-stage build: a static binary on a distroless, non-root base.
#   docker build -t ai-gateway .
#   docker run -p 8080:8080 -v $PWD/config.yaml:/etc/gateway/config.yaml:ro \
#     -e OPENAI_API_KEY ai-gateway

FROM golang:1.26 AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
# nomsgpack: gin's MessagePack codec, unused, left out (see the Makefile).
RUN CGO_ENABLED=0 go build -tags nomsgpack -trimpath -ldflags='-s -w' -o /out/gateway ./cmd/gateway

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/gateway /usr/local/bin/gateway
COPY config.yaml /etc/gateway/config.yaml
EXPOSE 8080
USER nonroot:nonroot
ENTRYPOINT ["/usr/local/bin/gateway"]
# Inside a container the gateway must listen on all interfaces, while the
# shipped config binds loopback for local use: the default arguments
# override the address. Replace them (docker run IMAGE -config ...) to
# take everything from a mounted file.
CMD ["-config", "/etc/gateway/config.yaml", "-listen", "0.0.0.0:8080"]
