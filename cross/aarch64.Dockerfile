# The image `cross build --target aarch64-unknown-linux-gnu` uses (Cross.toml points here).
# Untested in this repository: its development and CI machines have no Docker or Podman engine; the same
# build is proven there by scripts/cross-check with Debian's cross toolchain.
#
# The base is cross-rs's own image for the target, from the `main` branch: it holds the aarch64 gcc
# (CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER), libc6-dev-arm64-cross and the qemu runner. cross 0.2.5's
# images are Ubuntu 16.04, whose libclang 3.8 predates the libclang 6.0 API that bindgen 0.65 (used by
# v4l2-sys-mit) is built against; hence `main`, and not CROSS_BASE_IMAGE, which cross sets to the image of
# its own version. Another base: Cross.toml's build-args, e.g. BASE_IMAGE = "...".
ARG BASE_IMAGE=ghcr.io/cross-rs/aarch64-unknown-linux-gnu:main
FROM ${BASE_IMAGE}

# What camclassd's dependencies need on top of the base image:
# - libclang (libclang-dev, clang) on the build host: nokhwa's `input-native` pulls in v4l -> v4l2-sys-mit,
#   whose build script runs bindgen over <linux/videodev2.h>. Recent base images have it; old ones do not.
# - the arm64 kernel UAPI headers (linux/videodev2.h): linux-libc-dev-arm64-cross, which
#   libc6-dev-arm64-cross already depends on; named here so that a base image without it fails loudly.
# - libjpeg-turbo's TurboJPEG for arm64 (libturbojpeg0-dev:arm64, multiarch): camclassd links it to decode
#   JPEG (src/preprocess/turbo.rs).
# Nothing else: v4l2-sys-mit only reads kernel headers (no libv4l-dev:arm64 is linked; v4l's `libv4l`
# feature is off), ONNX Runtime is loaded at run time (`ort`'s load-dynamic), and rustls' aws-lc-sys
# builds with the cross gcc alone.
RUN dpkg --add-architecture arm64 \
 && apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install --assume-yes --no-install-recommends \
      libclang-dev clang libc6-dev-arm64-cross linux-libc-dev-arm64-cross libturbojpeg0-dev:arm64 \
 && rm -rf /var/lib/apt/lists/* \
 && test -f /usr/aarch64-linux-gnu/include/linux/videodev2.h

# bindgen must parse the arm64 headers, not the host's: the sysroot of the cross libc, with the host's
# /usr/include only as a last resort for compiler headers (what cross-rs's own images set; restated
# for base images that predate it).
ENV BINDGEN_EXTRA_CLANG_ARGS_aarch64_unknown_linux_gnu="--sysroot=/usr/aarch64-linux-gnu -idirafter/usr/include"
