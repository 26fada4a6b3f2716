//! A simulated network of Veil validators on Commonware's deterministic runtime.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use commonware_cryptography::{
    Signer as _,
    ed25519::{PrivateKey, PublicKey},
};
use commonware_p2p::simulated::{self, Link, Network, Oracle};
use commonware_runtime::{Clock, Quota, Supervisor as _, deterministic};
use commonware_utils::{NZU32, NZUsize, probability};
use veil_crypto::sign::SigningKey;
use veil_ledger::{Allocation, FeeSchedule, Genesis, ValidatorAccount};
use veil_node::app::BlockLimits;
use veil_node::store::Sealer;
use veil_node::validator::{self, Channels, Timing, Validator, ValidatorConfig, channels};
use zeroize::Zeroizing;

pub const QUOTA: Quota = Quota::per_second(NZU32!(100_000));
pub const LINK: Link = Link {
    latency: Duration::from_millis(20),
    jitter: Duration::from_millis(5),
    success_rate: probability!(1.0),
};

/// Test-only "sealing": a fixed tag, no secrecy. The deterministic simulator checks that a seed
/// reproduces a run byte for byte, storage included, so this stand-in must be deterministic; real
/// sealing is the platform's (`veil_node::store::PlatformSealer`), tested in `veil-platform`.
pub struct TestSealer;

impl Sealer for TestSealer {
    fn seal(&self, data: &[u8]) -> Result<Vec<u8>, String> {
        Ok([b"TESTSEAL".as_slice(), data].concat())
    }
    fn unseal(&self, sealed: &[u8]) -> Result<Zeroizing<Vec<u8>>, String> {
        sealed
            .strip_prefix(b"TESTSEAL")
            .map(|d| Zeroizing::new(d.to_vec()))
            .ok_or_else(|| "not test-sealed".to_string())
    }
}

/// A demo wallet funded at genesis.
pub fn wallet(i: u8) -> SigningKey {
    SigningKey::from_bytes(&[0xa0 + i; 32])
}

pub fn genesis(n_validators: usize, wallets: u8, epoch_length: u64) -> Genesis {
    Genesis {
        chain_id: "veil-sim".into(),
        epoch_length,
        allocations: (0..wallets)
            .map(|i| Allocation {
                address: wallet(i).verifying_key().address(),
                amount: 1_000_000_000,
            })
            .collect(),
        validators: (0..n_validators)
            .map(|i| ValidatorAccount {
                address: SigningKey::from_bytes(&[0x10 + i as u8; 32])
                    .verifying_key()
                    .address(),
            })
            .collect(),
        fees: FeeSchedule::default(),
    }
}

pub struct Net {
    pub ctx: deterministic::Context,
    pub oracle: Oracle<PublicKey, deterministic::Context>,
    pub signers: Vec<PrivateKey>,
    pub keys: Vec<PublicKey>,
    pub genesis: Genesis,
    pub seed: [u8; 32],
    pub nodes: BTreeMap<usize, Validator>,
    pub timing: Timing,
}

impl Net {
    pub async fn new(ctx: deterministic::Context, n: usize, genesis: Genesis) -> Self {
        let signers: Vec<PrivateKey> = (0..n as u64).map(PrivateKey::from_seed).collect();
        let keys: Vec<PublicKey> = signers.iter().map(|s| s.public_key()).collect();
        let (network, oracle) = Network::new_with_peers(
            ctx.child("network"),
            simulated::Config {
                max_size: validator::max_message_size(n),
                max_peers_per_set: NZUsize!(n),
                disconnect_on_block: true,
                tracked_peer_sets: NZUsize!(1),
            },
            keys.clone(),
        )
        .await;
        network.start();
        let mut net = Self {
            ctx,
            oracle,
            signers,
            keys,
            genesis,
            seed: [0x42; 32],
            nodes: BTreeMap::new(),
            timing: Timing::default(),
        };
        net.link_all().await;
        net
    }

    pub async fn link(&mut self, a: usize, b: usize) {
        let _ = self
            .oracle
            .add_link(self.keys[a].clone(), self.keys[b].clone(), LINK)
            .await;
    }

    pub async fn unlink(&mut self, a: usize, b: usize) {
        let _ = self
            .oracle
            .remove_link(self.keys[a].clone(), self.keys[b].clone())
            .await;
    }

    pub async fn link_all(&mut self) {
        for a in 0..self.keys.len() {
            for b in 0..self.keys.len() {
                if a != b {
                    self.link(a, b).await;
                }
            }
        }
    }

    /// Cuts every link between the two groups.
    pub async fn partition(&mut self, left: &[usize], right: &[usize]) {
        for &a in left {
            for &b in right {
                self.unlink(a, b).await;
                self.unlink(b, a).await;
            }
        }
    }

    pub async fn start(&mut self, i: usize) {
        let control = self.oracle.control(self.keys[i].clone());
        let reg = async |ch| control.register(ch, QUOTA).await.unwrap();
        let chans = Channels {
            votes: reg(channels::VOTES).await,
            certificates: reg(channels::CERTIFICATES).await,
            resolver: reg(channels::RESOLVER).await,
            backfill: reg(channels::BACKFILL).await,
            broadcast: reg(channels::BROADCAST).await,
            txs: reg(channels::TXS).await,
        };
        let config = ValidatorConfig {
            signer: self.signers[i].clone(),
            validators: self.keys.clone(),
            genesis: self.genesis.clone(),
            genesis_seed: Some(veil_crypto::kdf::Seed::from_bytes(self.seed)),
            sealer: Arc::new(TestSealer),
            partition: format!("validator-{i}"),
            mempool_capacity: 100_000,
            limits: BlockLimits {
                max_txs: 2_000,
                max_bytes: 2 << 20,
            },
            timing: self.timing,
        };
        let ctx = self.ctx.child("validator").with_attribute("index", i);
        let v = validator::start(ctx, config, chans, self.oracle.manager(), control.clone())
            .await
            .unwrap();
        self.nodes.insert(i, v);
    }

    pub async fn start_all(&mut self) {
        for i in 0..self.keys.len() {
            self.start(i).await;
        }
    }

    /// Stops validator `i` as a crash would (its storage stays).
    pub fn crash(&mut self, i: usize) {
        if let Some(v) = self.nodes.remove(&i) {
            v.abort();
        }
    }

    pub fn height(&self, i: usize) -> u64 {
        self.nodes[&i].core.executed_height()
    }

    /// Waits (simulated time) until every listed validator has executed `height`.
    pub async fn wait_height(&self, which: &[usize], height: u64) {
        loop {
            if which.iter().all(|i| self.height(*i) >= height) {
                return;
            }
            self.ctx.sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits until every listed validator has an empty mempool and has executed at least one
    /// more block (so submitted transactions are finalized or dropped).
    pub async fn settle(&self, which: &[usize]) {
        let start: Vec<u64> = which.iter().map(|i| self.height(*i)).collect();
        loop {
            let empty = which.iter().all(|i| self.nodes[i].core.mempool_len() == 0);
            let moved = which.iter().zip(&start).all(|(i, h)| self.height(*i) > *h);
            if empty && moved {
                return;
            }
            self.ctx.sleep(Duration::from_millis(50)).await;
        }
    }

    /// The state roots the listed validators hold at `height` (all must have executed it).
    /// Panics unless validators `which` executed `height` to the same state root.
    pub fn assert_roots_agree(&self, which: &[usize], height: u64) {
        let roots = self.roots_at(which, height);
        assert!(
            roots.iter().all(|r| *r == roots[0]),
            "validators {which:?} disagree on the state root at height {height}"
        );
    }

    pub fn roots_at(&self, which: &[usize], height: u64) -> Vec<[u8; 32]> {
        which
            .iter()
            .map(|i| {
                self.nodes[i]
                    .core
                    .executed_at(height)
                    .expect("executed")
                    .state_root
            })
            .collect()
    }

    pub fn tx_key(&self, i: usize) -> (veil_crypto::seal::HpkePublicKey, u64) {
        self.nodes[&i]
            .core
            .with_ledger(|l| (l.keys().current().tx_public(), l.epoch()))
    }
}
