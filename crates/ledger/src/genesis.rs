//! The genesis: chain id, epoch length, initial allocations, validators' fee accounts and the fee
//! schedule. JSON on disk (addresses in their `veil1…` string form); its [`Genesis::hash`] is the chain
//! id hash every transaction signs, so a transaction for one network is refused by every other.

use std::collections::BTreeSet;
use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use veil_crypto::sign::Address;

use crate::codec::put_lp;
use crate::error::{LedgerError, Result};
use crate::tx::MAX_PADDED_BODY;

/// The longest chain id accepted.
pub const MAX_CHAIN_ID_LEN: usize = 64;

/// The network's founding document.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Genesis {
    /// A human-readable network name, e.g. `veil-devnet` (1 to 64 printable ASCII characters).
    pub chain_id: String,
    /// Blocks per epoch (> 0). Height `h` is in epoch `h / epoch_length`.
    pub epoch_length: u64,
    /// Initial balances.
    pub allocations: Vec<Allocation>,
    /// The validators' fee accounts (at least one), which share the fees.
    pub validators: Vec<ValidatorAccount>,
    /// The fee per padded size bucket.
    pub fees: FeeSchedule,
}

impl fmt::Debug for Genesis {
    // The genesis is public, but allocations name accounts: keep them out of logs anyway.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Genesis")
            .field("chain_id", &self.chain_id)
            .field("epoch_length", &self.epoch_length)
            .field("allocations", &self.allocations.len())
            .field("validators", &self.validators.len())
            .field("fees", &self.fees)
            .finish()
    }
}

/// An initial balance.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Allocation {
    /// The account (`veil1…`).
    #[serde(with = "address_str")]
    pub address: Address,
    /// Its balance at height 0 (> 0).
    pub amount: u64,
}

/// A validator's fee account: its Ed25519 account address.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ValidatorAccount {
    /// The account fees are credited to (`veil1…`).
    #[serde(with = "address_str")]
    pub address: Address,
}

/// The fixed fee of a transaction by the padded size of its signed body (the size class an observer
/// sees anyway): one entry per bucket. A bucket without an entry cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FeeSchedule {
    /// Entries in increasing bucket order.
    pub buckets: Vec<BucketFee>,
}

/// The fee of one padded size.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BucketFee {
    /// Padded body size in bytes: a `veil_crypto::pad` bucket (a power of two >= 256).
    pub padded_size: u32,
    /// The fee, in the token's smallest unit.
    pub fee: u64,
}

impl Default for FeeSchedule {
    /// 10 for a 256-byte body (every transfer), doubling per bucket up to the largest usable one.
    fn default() -> Self {
        let mut buckets = Vec::new();
        let mut size = veil_crypto::pad::MIN_BUCKET;
        let mut fee = 10;
        while size <= MAX_PADDED_BODY {
            buckets.push(BucketFee {
                padded_size: size as u32,
                fee,
            });
            size *= 2;
            fee *= 2;
        }
        Self { buckets }
    }
}

impl FeeSchedule {
    /// The fee of a body padded to `padded_size` bytes, `None` when the schedule has no such bucket.
    pub fn fee_for(&self, padded_size: usize) -> Option<u64> {
        self.buckets
            .iter()
            .find(|b| b.padded_size as usize == padded_size)
            .map(|b| b.fee)
    }
}

mod address_str {
    use super::*;

    pub(super) fn serialize<S: Serializer>(a: &Address, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.collect_str(a)
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> std::result::Result<Address, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

impl Genesis {
    /// Parses and validates a genesis from JSON.
    pub fn from_json(json: &str) -> Result<Self> {
        let g: Self = serde_json::from_str(json).map_err(|e| {
            LedgerError::Genesis(format!(
                "not a valid genesis JSON document (line {}, column {}): {e}",
                e.line(),
                e.column()
            ))
        })?;
        g.validate()?;
        Ok(g)
    }

    /// Pretty JSON, as [`Genesis::from_json`] reads it.
    pub fn to_json(&self) -> String {
        // Serialising plain structs of strings and integers cannot fail.
        serde_json::to_string_pretty(self).unwrap_or_default()
    }

    /// Checks every rule, naming the first one broken.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(LedgerError::Genesis(m));
        if self.chain_id.is_empty() || self.chain_id.len() > MAX_CHAIN_ID_LEN {
            return bad(format!(
                "chain_id must be 1 to {MAX_CHAIN_ID_LEN} characters, got {}",
                self.chain_id.len()
            ));
        }
        if !self.chain_id.bytes().all(|b| b.is_ascii_graphic()) {
            return bad(format!(
                "chain_id {:?} must be printable ASCII without spaces",
                self.chain_id
            ));
        }
        if self.epoch_length == 0 {
            return bad("epoch_length must be at least 1 block".into());
        }
        let mut seen = BTreeSet::new();
        let mut total: u64 = 0;
        for (i, a) in self.allocations.iter().enumerate() {
            if a.amount == 0 {
                return bad(format!("allocation {i} ({}) has amount 0; remove it", a.address));
            }
            if !seen.insert(a.address) {
                return bad(format!(
                    "allocation {i}: {} is allocated twice; merge the entries",
                    a.address
                ));
            }
            total = match total.checked_add(a.amount) {
                Some(t) => t,
                None => return bad("allocations sum to more than 2^64 - 1; lower them".into()),
            };
        }
        if self.validators.is_empty() {
            return bad("at least one validator fee account is needed".into());
        }
        let mut seen = BTreeSet::new();
        for (i, v) in self.validators.iter().enumerate() {
            if !seen.insert(v.address) {
                return bad(format!("validator {i}: {} is listed twice", v.address));
            }
        }
        if self.fees.buckets.is_empty() {
            return bad("the fee schedule is empty: give a fee for at least the 256-byte bucket".into());
        }
        let mut last = 0usize;
        for b in &self.fees.buckets {
            let size = b.padded_size as usize;
            if size < veil_crypto::pad::MIN_BUCKET || !size.is_power_of_two() {
                return bad(format!(
                    "fee bucket {size} is not a padding bucket (a power of two of at least {} bytes)",
                    veil_crypto::pad::MIN_BUCKET
                ));
            }
            if size > MAX_PADDED_BODY {
                return bad(format!(
                    "fee bucket {size} can never be used: the largest transaction body that fits an envelope pads to {MAX_PADDED_BODY} bytes"
                ));
            }
            if size <= last {
                return bad(format!(
                    "fee buckets must be in increasing order without repeats ({size} after {last})"
                ));
            }
            last = size;
        }
        if self.fees.fee_for(veil_crypto::pad::MIN_BUCKET).is_none() {
            return bad(format!(
                "the fee schedule has no {}-byte bucket, so no transfer could be sent",
                veil_crypto::pad::MIN_BUCKET
            ));
        }
        Ok(())
    }

    /// The chain id hash: a tagged SHA-256 of a canonical binary encoding of every field.
    pub fn hash(&self) -> [u8; 32] {
        let mut buf = Vec::new();
        put_lp(&mut buf, self.chain_id.as_bytes());
        buf.extend_from_slice(&self.epoch_length.to_be_bytes());
        buf.extend_from_slice(&(self.allocations.len() as u64).to_be_bytes());
        for a in &self.allocations {
            buf.extend_from_slice(&a.address.0);
            buf.extend_from_slice(&a.amount.to_be_bytes());
        }
        buf.extend_from_slice(&(self.validators.len() as u64).to_be_bytes());
        for v in &self.validators {
            buf.extend_from_slice(&v.address.0);
        }
        buf.extend_from_slice(&(self.fees.buckets.len() as u64).to_be_bytes());
        for b in &self.fees.buckets {
            buf.extend_from_slice(&b.padded_size.to_be_bytes());
            buf.extend_from_slice(&b.fee.to_be_bytes());
        }
        veil_crypto::hash::sha256_tagged(crate::tags::GENESIS, &[&buf])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(b: u8) -> Address {
        Address([b; 20])
    }

    pub(crate) fn sample() -> Genesis {
        Genesis {
            chain_id: "veil-test".into(),
            epoch_length: 10,
            allocations: vec![Allocation {
                address: addr(1),
                amount: 1000,
            }],
            validators: vec![ValidatorAccount { address: addr(9) }],
            fees: FeeSchedule::default(),
        }
    }

    #[test]
    fn json_round_trip_and_hash() {
        let g = sample();
        let json = g.to_json();
        assert!(json.contains(&addr(1).to_string()));
        let back = Genesis::from_json(&json).unwrap();
        assert_eq!(back, g);
        assert_eq!(back.hash(), g.hash());
        let mut other = g.clone();
        other.chain_id = "veil-other".into();
        assert_ne!(other.hash(), g.hash());
        assert_eq!(g.fees.fee_for(256), Some(10));
        assert_eq!(g.fees.fee_for(2048), Some(80));
        assert_eq!(g.fees.fee_for(4096), None);
    }

    #[test]
    fn validation_names_the_problem() {
        type Case = (fn(&mut Genesis), &'static str);
        let cases: Vec<Case> = vec![
            (|g| g.chain_id.clear(), "chain_id must be"),
            (|g| g.chain_id = "a b".into(), "printable ASCII"),
            (|g| g.epoch_length = 0, "epoch_length"),
            (|g| g.allocations[0].amount = 0, "amount 0"),
            (
                |g| g.allocations.push(g.allocations[0].clone()),
                "allocated twice",
            ),
            (
                |g| {
                    g.allocations.push(Allocation {
                        address: Address([2; 20]),
                        amount: u64::MAX,
                    })
                },
                "2^64",
            ),
            (|g| g.validators.clear(), "at least one validator"),
            (|g| g.validators.push(g.validators[0].clone()), "listed twice"),
            (|g| g.fees.buckets.clear(), "empty"),
            (|g| g.fees.buckets[0].padded_size = 300, "not a padding bucket"),
            (|g| g.fees.buckets[0].padded_size = 128, "not a padding bucket"),
            (
                |g| {
                    g.fees.buckets.push(BucketFee {
                        padded_size: 4096,
                        fee: 1,
                    })
                },
                "never be used",
            ),
            (|g| g.fees.buckets.swap(0, 1), "increasing order"),
            (
                |g| {
                    g.fees.buckets.remove(0);
                },
                "no 256-byte bucket",
            ),
        ];
        for (mutate, want) in cases {
            let mut g = sample();
            mutate(&mut g);
            let err = g.validate().unwrap_err().to_string();
            assert!(err.contains(want), "{err:?} should contain {want:?}");
            assert!(Genesis::from_json(&g.to_json()).is_err());
        }
        let bad = Genesis::from_json("{\"chain_id\": 5}").unwrap_err().to_string();
        assert!(bad.contains("line 1"), "{bad}");
        let bad = sample().to_json().replace("veil1", "veil2");
        assert!(
            Genesis::from_json(&bad)
                .unwrap_err()
                .to_string()
                .contains("veil1")
        );
    }
}
