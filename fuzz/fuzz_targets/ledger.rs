//! Every decoder of `veil_ledger` on arbitrary bytes: `Envelope::decode`, `TxBody::decode` and
//! `SignedTx::decode` (whatever decodes re-encodes to the input), `Ledger::check`, `Ledger::query` and
//! `open_answer` with fixed keys (nothing the fuzzer makes opens), `Ledger::restore`, and
//! `Ledger::execute_block` of the input as one envelope and as a block split by its first byte (never
//! an error, nothing applied).
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use veil_crypto::kdf::Seed;
use veil_crypto::seal::HpkeSecretKey;
use veil_crypto::sign::SigningKey;
use veil_ledger::{
    Allocation, Envelope, FeeSchedule, Genesis, KeyRing, Ledger, SignedTx, TxBody, ValidatorAccount, open_answer,
};

fn genesis() -> &'static Genesis {
    static G: OnceLock<Genesis> = OnceLock::new();
    G.get_or_init(|| Genesis {
        chain_id: "veil-fuzz".into(),
        epoch_length: 4,
        allocations: vec![Allocation {
            address: SigningKey::from_bytes(&[1; 32]).verifying_key().address(),
            amount: 1_000_000,
        }],
        validators: vec![ValidatorAccount {
            address: SigningKey::from_bytes(&[2; 32]).verifying_key().address(),
        }],
        fees: FeeSchedule::default(),
    })
}

fn seed() -> Seed {
    Seed::from_bytes([0x5E; 32])
}

fuzz_target!(|data: &[u8]| {
    if let Ok(env) = Envelope::decode(data) {
        assert_eq!(env.encode(), data);
    }
    if let Ok(b) = TxBody::decode(data) {
        assert_eq!(b.encode(), data);
    }
    if let Ok(s) = SignedTx::decode(data) {
        assert_eq!(s.encode(), data);
        let _ = s.verify();
    }
    let _ = Genesis::from_json(&String::from_utf8_lossy(data));
    let mut ledger = Ledger::genesis(genesis(), seed()).expect("fixed genesis");
    assert!(ledger.check(data).is_err());
    assert!(ledger.query(data).is_err());
    assert!(open_answer(&HpkeSecretKey::derive(b"fuzz reply"), data).is_err());
    let _ = Ledger::restore(genesis(), KeyRing::new(seed(), 0), data);
    let split = usize::from(data.first().copied().unwrap_or(1).max(1));
    let block: Vec<Vec<u8>> = data.chunks(split).map(<[u8]>::to_vec).chain([data.to_vec()]).collect();
    let out = ledger.execute_block(1, &block).expect("a block of garbage executes");
    assert_eq!(out.applied + out.failed, 0);
});
