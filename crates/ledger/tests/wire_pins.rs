//! Pins the ledger's bytes: a change here is a protocol change and needs a new version.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use veil_crypto::sign::Address;
use veil_ledger::*;

fn pinned_body() -> TxBody {
    TxBody {
        chain_id_hash: [0xC1; 32],
        sender: key(7).verifying_key(),
        nonce: 0x0102,
        fee: 10,
        kind: TxKind::Transfer {
            to: Address([0xAB; 20]),
            amount: 0x1122_3344_5566_7788,
        },
    }
}

#[test]
fn tx_body_bytes_are_pinned() {
    let b = pinned_body();
    let pk = hex::encode(key(7).verifying_key().to_bytes());
    assert_eq!(
        hex::encode(b.encode()),
        format!(
            "01{}{pk}{}{}01{}{}{}",
            "c1".repeat(32),
            "0000000000000102",
            "000000000000000a",
            "0000001c",
            "ab".repeat(20),
            "1122334455667788"
        )
    );
    assert_eq!(TxBody::decode(&b.encode()).unwrap(), b);
    // Ed25519 is deterministic: the signed transaction is pinned whole.
    let signed = SignedTx::sign(&key(7), b.clone());
    assert_eq!(hex::encode(signed.encode()), PINNED_SIGNED);
    let back = SignedTx::decode(&signed.encode()).unwrap();
    back.verify().unwrap();
    assert_eq!(back, signed);
}

#[test]
fn envelope_bytes_are_pinned() {
    let env = Envelope {
        epoch: 0x0A0B,
        sealed: vec![0xEE; 3],
    };
    assert_eq!(hex::encode(env.encode()), "010000000000000a0b00000003eeeeee");
    assert_eq!(Envelope::decode(&env.encode()).unwrap(), env);
    assert_eq!(
        hex::encode(env.id()),
        hex::encode(veil_crypto::hash::sha256_tagged(
            "veil/v1/envelope-id",
            &[&env.encode()]
        ))
    );
    // A real envelope: only the size and the public header are fixed (HPKE is randomised).
    let g = genesis(&[(1, 1000)], 10);
    let ledger = Ledger::genesis(&g, seed()).unwrap();
    let e = Envelope::decode(&transfer(&ledger, &key(1), 0, addr(2), 5)).unwrap();
    let bytes = e.encode();
    assert_eq!(bytes.len(), 13 + 76 + 256);
    // version | epoch 0 | sealed length 332 | HPKE v1 X25519/HKDF-SHA256/ChaCha20-Poly1305 | "veil/v1/tx-envelope"
    assert_eq!(
        hex::encode(&bytes[..13 + 28]),
        format!(
            "01{}{}{}{}",
            "0000000000000000",
            "0000014c",
            "01002000010003",
            "0013".to_owned() + &hex::encode("veil/v1/tx-envelope")
        )
    );
}

#[test]
fn genesis_hash_keys_and_state_root_are_pinned() {
    let g = genesis(&[(1, 1000), (2, 0x1122_3344_5566_7788)], 10);
    assert_eq!(hex::encode(g.hash()), PINNED_GENESIS_HASH);
    let ledger = Ledger::genesis(&g, seed()).unwrap();
    assert_eq!(
        hex::encode(ledger.keys().current().tx_public().to_bytes()),
        PINNED_TX_PUBLIC
    );
    // Deterministic AEAD and keyed slots: the whole state, hence its root, is pinned.
    assert_eq!(hex::encode(ledger.state_root()), PINNED_ROOT);
    let snap = ledger.snapshot();
    assert_eq!(hex::encode(&snap[..9]), "5645494c534e415001");
    assert_eq!(snap.len(), 9 + 32 + 8 + 8 + 32 + 8 + 2 * (32 + 4 + 144));
}

const PINNED_SIGNED: &str = "0000007201c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1ea4a6c63e29c520abef5507b132ec5f9954776aebebe7b92421eea691446d22c0000000000000102000000000000000a010000001cabababababababababababababababababababab11223344556677885842629d50a594db336fff87677838ba2a6bc298062392fca423a7b719fc01500055cc67af797b0b1e6253ee163441ad9dc210055ccf1ffaa64c0b4f8b238e01";
const PINNED_GENESIS_HASH: &str = "513417d31053fc0984500a3b95aef27595a0c327378fefd356f8e4b87f722911";
const PINNED_TX_PUBLIC: &str = "a5dc7bf4f600b0e8df2c24881000a15db30cd33ccd96907f8fbe606e5329475e";
const PINNED_ROOT: &str = "a7025c5142341a69910b172113c6842c8730eea46797f6a45356c8c4fc0ae7eb";
