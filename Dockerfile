# speech-gateway image from source: a static binary on a distroless base,
# running as non-root, with OCI labels and a CycloneDX SBOM at /sbom. The
# same image as `make image` (deploy/container/Containerfile, FROM scratch
# with a binary built outside). Build: docker build -t speech-gateway .
# The simulator has its own stage: docker build --target slngsim -t slngsim .
FROM golang:1.26 AS build
WORKDIR /src
COPY go.mod go.sum ./
# The generated API is its own module, replaced by ./gen in go.mod.
COPY gen/go.mod gen/go.sum ./gen/
RUN go mod download
# The SBOM generator, pinned as in the Makefile.
ARG CYCLONEDX_GOMOD_VERSION=v1.10.0
RUN GOBIN=/usr/local/bin go install github.com/CycloneDX/cyclonedx-gomod/cmd/cyclonedx-gomod@${CYCLONEDX_GOMOD_VERSION}
COPY . .
# The build context has no .git, so the version and revision come from
# the build arguments (git describe, git rev-parse HEAD).
ARG VERSION=unknown
ARG REVISION=unknown
# nodev: the production binary leaves the embedded simulator out.
RUN ldflags="-s -w -X main.version=${VERSION} -X main.revision=${REVISION}" \
 && CGO_ENABLED=0 go build -trimpath -tags nodev -ldflags="$ldflags" -o /out/speech-gateway ./cmd/speech-gateway \
 && CGO_ENABLED=0 go build -trimpath -ldflags="$ldflags" -o /out/slngsim ./cmd/slngsim \
 && for b in speech-gateway slngsim; do \
      cyclonedx-gomod bin -json -std -version "${VERSION}" -output /out/$b.cdx.json /out/$b; done

# The simulator, for test clusters: never in the production image.
FROM gcr.io/distroless/static-debian12:nonroot AS slngsim
ARG VERSION=unknown
ARG REVISION=unknown
ARG SOURCE=https://github.com/speech-gateway/speech-gateway
LABEL org.opencontainers.image.title="slngsim" \
      org.opencontainers.image.description="A simulator of SLNG's speech WebSocket API, for testing speech-gateway" \
      org.opencontainers.image.source="${SOURCE}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=build /out/slngsim /slngsim
COPY --from=build /out/slngsim.cdx.json /sbom/slngsim.cdx.json
USER 65532:65532
EXPOSE 8787
ENTRYPOINT ["/slngsim"]
CMD ["--listen", ":8787"]

# The production image (the default target): speech-gateway alone.
FROM gcr.io/distroless/static-debian12:nonroot
ARG VERSION=unknown
ARG REVISION=unknown
ARG SOURCE=https://github.com/speech-gateway/speech-gateway
LABEL org.opencontainers.image.title="speech-gateway" \
      org.opencontainers.image.description="gRPC streaming text-to-speech and speech-to-text through SLNG" \
      org.opencontainers.image.source="${SOURCE}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=build /out/speech-gateway /speech-gateway
COPY --from=build /out/speech-gateway.cdx.json /sbom/speech-gateway.cdx.json
USER 65532:65532
# 50051: gRPC. 9090: /metrics, /healthz, /readyz.
EXPOSE 50051 9090
ENTRYPOINT ["/speech-gateway"]
