# syntax=docker/dockerfile:1
#
# rella with GPU support (build tag rellagpu) on an NVIDIA CUDA runtime image.
#
#   docker build -t rella .
#   docker run --rm --gpus all rella gpu-selftest
#
# The binary links no CUDA library: it opens libcuda.so.1 (from the host
# driver, mounted by the NVIDIA container toolkit), libcublas, libnvrtc and
# libnccl.so.2 (all in the runtime image) with dlopen. So the builder needs
# only CUDA *headers*, which scripts/build-gpu.sh fetches from Debian.
#
# CUDA_IMAGE picks the runtime. The default, CUDA 12.9, is the last release
# whose libraries still run on V100 (sm_70); for CUDA 13 on newer GPUs:
#   docker build --build-arg CUDA_IMAGE=nvidia/cuda:13.0.1-runtime-ubuntu24.04 -t rella:cuda13 .
# The runtime's glibc must be at least the builder's: GO_IMAGE is Debian
# bookworm (glibc 2.36), the default runtime Ubuntu 24.04 (2.39). For an
# ubuntu22.04 runtime (2.35) also pass GO_IMAGE=golang:1.26-bullseye (2.31).
# The last step of the runtime stage runs the binary, so a mismatch fails
# the build rather than the job.

ARG GO_IMAGE=golang:1.26-bookworm
ARG CUDA_IMAGE=nvidia/cuda:12.9.1-runtime-ubuntu24.04

FROM ${GO_IMAGE} AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN --mount=type=cache,target=/go/pkg/mod go mod download
COPY . .
# The kit (CUDA headers, about 2 MB kept from a 770 MB Debian package) lives in
# a cache mount, so it is downloaded once per builder, not once per build.
RUN --mount=type=cache,target=/go/pkg/mod \
    --mount=type=cache,target=/root/.cache/go-build \
    --mount=type=cache,target=/kit \
    RELLA_KIT=/kit bash scripts/build-gpu.sh -o /out/rella \
 && /out/rella --help >/dev/null 2>&1

FROM ${CUDA_IMAGE} AS runtime
ARG UID=10001
# A non-root user that owns the three volumes. With bind mounts, run as the
# owner of the host folders instead: docker run --user "$(id -u):$(id -g)" ...
# OpenBLAS for the CPU engine (rella's CPU commands and model.device=cpu;
# RELLA_BLAS=none uses the pure-Go GEMM instead).
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends libopenblas0-pthread \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --uid "${UID}" --user-group --create-home --shell /usr/sbin/nologin rella \
 && mkdir -p /models /data /runs \
 && chown rella:rella /models /data /runs
COPY --from=build /out/rella /usr/local/bin/rella
# The presets' relative paths (models/..., data/..., runs/...) resolve under
# / to the volumes: rella score -c ml1m-zeroshot reads /models/vicuna-13b-v1.3
# and /data/ml-1m and writes /runs/ml1m-zeroshot.
WORKDIR /
VOLUME ["/models", "/data", "/runs"]
ENV NVIDIA_VISIBLE_DEVICES=all \
    NVIDIA_DRIVER_CAPABILITIES=compute,utility
USER rella
# Fails the build when the runtime's glibc is older than the builder's.
RUN rella --help >/dev/null 2>&1
ENTRYPOINT ["rella"]
CMD ["--help"]
