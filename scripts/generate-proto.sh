#!/usr/bin/env bash
# Regenerates Sources/PulsarProtocol/Generated/pulsar_api.pb.swift from
# Sources/PulsarProtocol/Proto/pulsar_api.proto. Safe to re-run: protoc and the
# protoc-gen-swift plugin are installed / built only when missing.
# The normal build does not need this script; the generated file is committed.
set -euo pipefail

SWIFT_PROTOBUF_VERSION="1.39.0"          # keep equal to the swift-protobuf version in Package.swift
PLUGIN_SRC="${PLUGIN_SRC:-/tmp/swift-protobuf}"
PLUGIN="$PLUGIN_SRC/.build/release/protoc-gen-swift"

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PROTO_DIR="$ROOT/Sources/PulsarProtocol/Proto"
OUT_DIR="$ROOT/Sources/PulsarProtocol/Generated"

if ! command -v protoc >/dev/null 2>&1; then
    apt-get update
    apt-get install -y protobuf-compiler
fi

if [ ! -x "$PLUGIN" ]; then
    if [ ! -d "$PLUGIN_SRC/.git" ]; then
        git clone -q https://github.com/apple/swift-protobuf.git "$PLUGIN_SRC"
    fi
    git -C "$PLUGIN_SRC" checkout -q "$SWIFT_PROTOBUF_VERSION"
    swift build -c release --package-path "$PLUGIN_SRC" --product protoc-gen-swift
fi

mkdir -p "$OUT_DIR"
protoc --plugin=protoc-gen-swift="$PLUGIN" \
       --proto_path="$PROTO_DIR" \
       --swift_out="$OUT_DIR" \
       --swift_opt=Visibility=Public \
       "$PROTO_DIR/pulsar_api.proto"

echo "generated $OUT_DIR/pulsar_api.pb.swift"
