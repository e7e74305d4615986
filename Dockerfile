# speech-gateway image: a static binary on a distroless base, running as
# non-root. Build: docker build -t speech-gateway . (or buildah bud).
FROM golang:1.26 AS build
WORKDIR /src
COPY go.mod go.sum ./
# The generated API is its own module, replaced by ./gen in go.mod.
COPY gen/go.mod gen/go.sum ./gen/
RUN go mod download
COPY . .
# The build context has no .git, so the version and revision come from
# `make image` (git describe, git rev-parse HEAD).
ARG VERSION=unknown
ARG REVISION=unknown
RUN ldflags="-s -w -X main.version=${VERSION} -X main.revision=${REVISION}" \
 && CGO_ENABLED=0 go build -trimpath -ldflags="$ldflags" -o /out/speech-gateway ./cmd/speech-gateway \
 && CGO_ENABLED=0 go build -trimpath -ldflags="$ldflags" -o /out/slngsim ./cmd/slngsim

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/speech-gateway /out/slngsim /
USER 65532:65532
# 50051: gRPC. 9090: /metrics, /healthz, /readyz.
EXPOSE 50051 9090
ENTRYPOINT ["/speech-gateway"]
