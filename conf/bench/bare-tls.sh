#!/usr/bin/env bash
# bare-tls.sh — the bare Pingora reference (../shared/bench/bare-pingora) with a TLS listener,
# for `make bench-tls`: how much of Berth's CPU per HTTP/2 request is Pingora's own.
#
#   conf/bench/bare-tls.sh OUT_DIR    builds OUT_DIR/target/release/bare-pingora
#
# The reference is copied to OUT_DIR and one change is made to its main.rs: with PB_TLS_CERT
# and PB_TLS_KEY set, it listens with Pingora's rustls `TlsSettings::intermediate` + `enable_h2`
# (ALPN h2, http/1.1) instead of plain TCP. Nothing else differs (Ketama on X-Session-Id, one
# thread, mimalloc, Berth's release profile).
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
SRC=${BARE_PINGORA_SRC:-$HERE/../../../shared/bench/bare-pingora}
OUT=${1:?usage: bare-tls.sh OUT_DIR}
mkdir -p "$OUT"
cp "$SRC/Cargo.toml" "$SRC/Cargo.lock" "$OUT/"
mkdir -p "$OUT/src"
python3 - "$SRC/src/main.rs" "$OUT/src/main.rs.new" <<'PY'
import sys
src = open(sys.argv[1]).read()
old = "    svc.add_tcp(&listen);"
new = '''    match (std::env::var("PB_TLS_CERT"), std::env::var("PB_TLS_KEY")) {
        (Ok(cert), Ok(key)) => {
            let mut tls = pingora_core::listeners::tls::TlsSettings::intermediate(&cert, &key)
                .expect("PB_TLS_CERT and PB_TLS_KEY are a certificate chain and its key");
            tls.enable_h2();
            svc.add_tls_with_settings(&listen, None, tls);
        }
        _ => svc.add_tcp(&listen),
    }'''
if src.count(old) != 1:
    sys.exit("bare-tls.sh: the reference's main.rs changed; update the patch")
open(sys.argv[2], "w").write(src.replace(old, new))
PY
# Rebuild only when the patched source changed.
cmp -s "$OUT/src/main.rs.new" "$OUT/src/main.rs" 2>/dev/null || mv "$OUT/src/main.rs.new" "$OUT/src/main.rs"
rm -f "$OUT/src/main.rs.new"
CARGO_TARGET_DIR="$OUT/target" cargo build --release --features mimalloc --manifest-path "$OUT/Cargo.toml"
