//! Helpers of the ledger's integration tests.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use veil_crypto::kdf::Seed;
use veil_crypto::seal::HpkeSecretKey;
use veil_crypto::sign::{Address, SigningKey};
use veil_ledger::*;

/// A fixed test key.
pub fn key(i: u8) -> SigningKey {
    SigningKey::from_bytes(&[i; 32])
}

pub fn addr(i: u8) -> Address {
    key(i).verifying_key().address()
}

pub fn seed() -> Seed {
    Seed::from_bytes([0x5E; 32])
}

/// Validators' fee accounts: keys 200, 201, 202.
pub fn genesis(allocations: &[(u8, u64)], epoch_length: u64) -> Genesis {
    Genesis {
        chain_id: "veil-test".into(),
        epoch_length,
        allocations: allocations
            .iter()
            .map(|&(i, amount)| Allocation {
                address: addr(i),
                amount,
            })
            .collect(),
        validators: (200..203)
            .map(|i| ValidatorAccount { address: addr(i) })
            .collect(),
        fees: FeeSchedule::default(),
    }
}

pub fn body(ledger: &Ledger, from: &SigningKey, nonce: u64, to: Address, amount: u64) -> TxBody {
    TxBody {
        chain_id_hash: ledger.genesis_hash(),
        sender: from.verifying_key(),
        nonce,
        fee: 10,
        kind: TxKind::Transfer { to, amount },
    }
}

/// A transfer sealed to the ledger's current epoch.
pub fn transfer(ledger: &Ledger, from: &SigningKey, nonce: u64, to: Address, amount: u64) -> Vec<u8> {
    seal_body(ledger, from, body(ledger, from, nonce, to, amount))
}

pub fn seal_body(ledger: &Ledger, from: &SigningKey, body: TxBody) -> Vec<u8> {
    seal_transaction(from, &ledger.keys().current().tx_public(), ledger.epoch(), body)
        .unwrap()
        .encode()
}

/// Asks `who`'s own account through a sealed query, returns the opened answer.
pub fn ask(ledger: &Ledger, who: &SigningKey, kind: QueryKind) -> Answer {
    let reply = HpkeSecretKey::generate().unwrap();
    let q = seal_query(
        who,
        &ledger.keys().current().tx_public(),
        ledger.epoch(),
        kind,
        &reply,
    )
    .unwrap();
    let sealed = ledger.query(&q).unwrap();
    let (answer, height) = open_answer_for(&reply, &q, &sealed).unwrap();
    assert_eq!(height, ledger.height());
    answer
}

pub fn balance(ledger: &Ledger, who: &SigningKey) -> (u64, u64) {
    match ask(ledger, who, QueryKind::Balance) {
        Answer::Balance { balance, nonce } => (balance, nonce),
        other => panic!("{other:?}"),
    }
}

/// Executes the next block.
pub fn block(ledger: &mut Ledger, txs: &[Vec<u8>]) -> BlockOutcome {
    let h = ledger.height() + 1;
    ledger.execute_block(h, txs).unwrap()
}
