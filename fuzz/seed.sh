#!/usr/bin/env bash
# Writes seed inputs (valid encodings to mutate) into fuzz/corpus/<target>/. The corpus is not committed
# (.gitignore); run this once before `cargo fuzz run`. See docs/fuzzing.md.
set -euo pipefail
cd "$(dirname "$0")"
samples="${VEIL_DCAP_SAMPLES:-$(ls -d "${CARGO_HOME:-$HOME/.cargo}"/registry/src/*/dcap-qvl-0.7.1/sample 2>/dev/null | head -n1)}"
for t in crypto_seal crypto_stream crypto_frames crypto_pad crypto_aead crypto_sign attest_evidence \
    attest_dcap attest_collateral types_frames types_messages ledger bundle gguf; do
    mkdir -p "corpus/$t"
done
put() { printf '%b' "$2" > "corpus/$1/$3"; }

# Simulated evidence (pinned in crates/attest/tests/sim_evidence.rs), bare and in an envelope.
sim=5645494c53494d3100000088ea4a6c63e29c520abef5507b132ec5f9954776aebebe7b92421eea691446d22c$(printf '01%.0s' {1..32})$(printf '02%.0s' {1..64})000000006553f10000000040eec56d46d96bc9576c640f783d6f10094cb0f7c0b7720c4485a4fe970f0fe7ead256a7c8e5a68bd08ce97ad5000cf6a7484662fd9620b97a4c825368fc2fb70c
echo -n "$sim" | xxd -r -p > corpus/attest_evidence/sim
{ printf 'VEILEVD1\x02\x00\x00\x00\xd8'; echo -n "$sim" | xxd -r -p; } > corpus/attest_evidence/sim_envelope
echo "0x$sim" > corpus/attest_evidence/sim_hex
if [ -n "$samples" ] && [ -f "$samples/tdx_quote" ]; then
    i=0
    for s in sgx_quote tdx_quote tdx_quote_td15ex tdx_quote_outdated; do
        { printf "\\x$(printf %02x $i)"; cat "$samples/$s"; } > "corpus/attest_dcap/$s"
        cp "$samples/${s}_collateral.json" "corpus/attest_collateral/$s.json"
        i=$((i + 1))
    done
    python3 - "$samples" corpus/attest_evidence/dcap_envelope <<'PY'
import struct, sys
d = sys.argv[1]
q = open(f"{d}/tdx_quote", "rb").read()
c = open(f"{d}/tdx_quote_collateral.json", "rb").read()
open(sys.argv[2], "wb").write(b"VEILEVD1\x01" + struct.pack(">I", len(q)) + q + struct.pack(">I", len(c)) + c)
PY
else
    echo "dcap-qvl samples not found: attest_dcap and attest_collateral start from an empty corpus" >&2
fi

# Ledger (pinned in crates/ledger/tests/wire_pins.rs): an envelope, a transaction body, a signed body, a genesis.
echo -n 010000000000000a0b00000003eeeeee | xxd -r -p > corpus/ledger/envelope
echo -n 01c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1ea4a6c63e29c520abef5507b132ec5f9954776aebebe7b92421eea691446d22c0000000000000102000000000000000a010000001cabababababababababababababababababababab1122334455667788 | xxd -r -p > corpus/ledger/body
echo -n 0000007201c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1ea4a6c63e29c520abef5507b132ec5f9954776aebebe7b92421eea691446d22c0000000000000102000000000000000a010000001cabababababababababababababababababababab11223344556677885842629d50a594db336fff87677838ba2a6bc298062392fca423a7b719fc01500055cc67af797b0b1e6253ee163441ad9dc210055ccf1ffaa64c0b4f8b238e01 | xxd -r -p > corpus/ledger/signed
put ledger '{"chain_id":"veil-fuzz","epoch_length":4,"allocations":[{"address":"veil136f4205466904d5780da4799b98548c123888fb5","amount":5}],"validators":[{"address":"veil136f4205466904d5780da4799b98548c123888fb5"}],"fees":{"buckets":[{"padded_size":256,"fee":10}]}}' genesis

# Wire types (pinned in crates/types/tests/wire_pins.rs).
put types_messages '{"type":"delta","text":"Pa"}' delta
put types_messages '{"type":"error","kind":"replay","message":"m"}' error
put types_messages "{\"type\":\"done\",\"finish_reason\":\"stop\",\"usage\":{\"prompt_tokens\":3,\"completion_tokens\":4},\"receipt\":{\"version\":1,\"request_hash\":\"$(printf '01%.0s' {1..32})\",\"response_hash\":\"$(printf '02%.0s' {1..32})\",\"model\":\"m\",\"prompt_tokens\":3,\"completion_tokens\":4,\"worker_key\":\"ea4a6c63e29c520abef5507b132ec5f9954776aebebe7b92421eea691446d22c\",\"signature\":\"271e02913500c9e08328c2060a2ab5ab2fd1cea9acc8835f9a6fbc38f4bc18ef8e4994a9d8f3f03308379115c0c9b2fb401c3d0b0dd376a28df788711a0b6b02\"}}" done
put types_messages "{\"version\":1,\"nonce\":\"$(printf '05%.0s' {1..16})\",\"timestamp_ms\":1700000000000,\"response_key\":\"$(printf '06%.0s' {1..32})\",\"model\":\"smollm2\",\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}],\"params\":{\"temperature\":1.0,\"top_p\":1.0,\"top_k\":0,\"seed\":null,\"max_tokens\":null,\"stop\":[],\"presence_penalty\":0.0,\"frequency_penalty\":0.0},\"stream\":true}" infer
put types_messages "{\"version\":1,\"evidence\":\"0102\",\"hpke_public_key\":\"$(printf 'aa%.0s' {1..32})\",\"signing_public_key\":\"$(printf 'bb%.0s' {1..32})\",\"measurement\":\"cccc\",\"simulated\":true,\"models\":[{\"name\":\"smollm2\",\"bundle\":\"abc\",\"ready\":false}]}" attestation
put types_messages '{"version":1,"model":"m","bundle":"sha256:00","sealed_key":"0102"}' provision
put types_frames '\x01\x00\x00\x00\x00\x05hello\x00\x00\x00\x00' two_frames

# Formats with a magic: a header to start from.
put crypto_stream 'VEILSTRM\x01\x00\x00\x00\x10' header
put crypto_seal '\x01\x00\x20\x00\x01\x00\x03\x00\x0cveil/v1/fuzz' header
put crypto_sign 'veil10123456789abcdef0123456789abcdef01234567' address
put bundle 'VEILBNDL\x01\x00\x11\x04gguf\x00\x00\x00\x00\x00\x00\x00\x00\x00\x10\x00\x00VEILSTRM\x01\x00\x10\x00\x00' header
put gguf 'GGUF\x03\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x01\x00\x00\x00\x00\x00\x00\x00\x14\x00\x00\x00\x00\x00\x00\x00general.architecture\x08\x00\x00\x00\x05\x00\x00\x00\x00\x00\x00\x00llama' header
