# weir's image, for machines with a container engine (`docker build -t weir .`).
# `make image` builds the same image without one (image/build.sh, image/mkimage).
FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
# Static: glibc linked in, rustls instead of OpenSSL, so the image needs nothing else.
RUN RUSTFLAGS="-C target-feature=+crt-static -C strip=symbols" \
    cargo build --release --locked --target x86_64-unknown-linux-gnu --bin weir

FROM scratch
COPY --from=build /src/target/x86_64-unknown-linux-gnu/release/weir /weir
# The manifests in config/ also set runAsNonRoot and a read-only root filesystem.
USER 65532:65532
ENTRYPOINT ["/weir"]
CMD ["controller"]
