//! Deterministic simulations of a 4-validator Veil network on Commonware's seeded runtime:
//! all online, a 2-2 partition that heals, a crash and restart from disk, a byzantine validator.
//! Each asserts that honest validators keep finalizing, agree on the state root, and lose no
//! committed transfer; the same seed reproduces a run exactly.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::{Net, genesis, wallet};
use commonware_runtime::{Clock, Runner, Supervisor as _, deterministic};
use veil_crypto::kdf::Seed;
use veil_crypto::seal::{HpkePublicKey, HpkeSecretKey};
use veil_crypto::sign::SigningKey;
use veil_ledger::{Answer, EpochKeys, QueryKind, TxBody, TxKind, open_answer, seal_query, seal_transaction};

const WALLETS: u8 = 4;
const AMOUNT: u64 = 1_000;

/// Transfers wallet i -> wallet (i+1) % WALLETS, `per_wallet` each, nonces from `first_nonce`.
fn transfers(
    g: &veil_ledger::Genesis,
    tx_public: &HpkePublicKey,
    epoch: u64,
    per_wallet: u64,
    first_nonce: u64,
) -> Vec<Vec<u8>> {
    let fee = g.fees.buckets[0].fee;
    let mut out = Vec::new();
    for n in 0..per_wallet {
        for i in 0..WALLETS {
            let from = wallet(i);
            let to = wallet((i + 1) % WALLETS).verifying_key().address();
            let body = TxBody {
                chain_id_hash: g.hash(),
                sender: from.verifying_key(),
                nonce: first_nonce + n,
                fee,
                kind: TxKind::Transfer { to, amount: AMOUNT },
            };
            out.push(seal_transaction(&from, tx_public, epoch, body).unwrap().encode());
        }
    }
    out
}

fn tx_public(seed: [u8; 32], epoch: u64) -> HpkePublicKey {
    EpochKeys::derive(&Seed::from_bytes(seed), epoch).tx_public()
}

fn balance(net: &Net, node: usize, who: &SigningKey) -> (u64, u64) {
    let (public, epoch) = net.tx_key(node);
    let reply = HpkeSecretKey::generate().unwrap();
    let q = seal_query(who, &public, epoch, QueryKind::Balance, &reply).unwrap();
    let sealed = net.nodes[&node].core.with_ledger(|l| l.query(&q)).unwrap();
    match open_answer(&reply, &sealed).unwrap() {
        Answer::Balance { balance, nonce } => (balance, nonce),
        other => panic!("unexpected answer {other:?}"),
    }
}

/// Every wallet sent and received the same number of transfers: balance = start - fees paid.
fn assert_balances(net: &Net, node: usize, transfers_each: u64) {
    let fee = net.genesis.fees.buckets[0].fee;
    for i in 0..WALLETS {
        let (bal, nonce) = balance(net, node, &wallet(i));
        assert_eq!(nonce, transfers_each, "wallet {i} nonce on validator {node}");
        assert_eq!(
            bal,
            1_000_000_000 - transfers_each * fee,
            "wallet {i} balance on validator {node}"
        );
    }
}

/// Submits each wallet's transfers (consecutive nonces) to one validator: wallet `w` to
/// `to[w % to.len()]` (`transfers` orders them nonce-major, so envelope `k` is wallet `k % WALLETS`).
fn submit_round_robin(net: &Net, txs: &[Vec<u8>], to: &[usize]) {
    for (k, tx) in txs.iter().enumerate() {
        let wallet = k % usize::from(WALLETS);
        net.nodes[&to[wallet % to.len()]].core.submit(tx.clone()).unwrap();
    }
}

fn runner(seed: u64) -> deterministic::Runner {
    deterministic::Runner::new(
        deterministic::Config::default()
            .with_seed(seed)
            .with_timeout(Some(Duration::from_secs(600))),
    )
}

/// All four online: runs, returns (auditor state, state roots by height on validator 0).
fn all_online_run(seed: u64, txs: Vec<Vec<u8>>) -> (String, Vec<[u8; 32]>) {
    runner(seed).start(|ctx| async move {
        let mut net = Net::new(ctx.child("net"), 4, genesis(4, WALLETS, 1_000)).await;
        net.start_all().await;
        net.wait_height(&[0, 1, 2, 3], 3).await;
        submit_round_robin(&net, &txs, &[0, 1, 2, 3]);
        net.settle(&[0, 1, 2, 3]).await;
        let h = (0..4).map(|i| net.height(i)).min().unwrap();
        net.assert_roots_agree(&[0, 1, 2, 3], h);
        for i in 0..4 {
            assert_balances(&net, i, txs.len() as u64 / u64::from(WALLETS));
        }
        let by_height = (1..=h)
            .map(|k| net.nodes[&0].core.executed_at(k).unwrap().state_root)
            .collect();
        (ctx.auditor().state(), by_height)
    })
}

#[test]
fn four_validators_all_online_finalize_agree_and_reproduce() {
    let g = genesis(4, WALLETS, 1_000);
    let txs = transfers(&g, &tx_public([0x42; 32], 0), 0, 10, 0);
    let (audit_a, roots_a) = all_online_run(7, txs.clone());
    let (audit_b, roots_b) = all_online_run(7, txs);
    assert_eq!(audit_a, audit_b, "the same seed must reproduce the run exactly");
    assert_eq!(roots_a, roots_b);
}

#[test]
fn partition_two_two_then_heal() {
    let g = genesis(4, WALLETS, 1_000);
    let txs = transfers(&g, &tx_public([0x42; 32], 0), 0, 5, 0);
    runner(11).start(|ctx| async move {
        let mut net = Net::new(ctx.child("net"), 4, g).await;
        net.start_all().await;
        net.wait_height(&[0, 1, 2, 3], 2).await;
        net.partition(&[0, 1], &[2, 3]).await;
        // Neither half has a quorum (3 of 4): no block finalizes while split.
        ctx.sleep(Duration::from_secs(2)).await;
        let stalled: Vec<u64> = (0..4).map(|i| net.height(i)).collect();
        submit_round_robin(&net, &txs, &[0, 2]);
        ctx.sleep(Duration::from_secs(10)).await;
        for (i, stalled_at) in stalled.iter().enumerate() {
            assert!(
                net.height(i) <= stalled_at + 1,
                "validator {i} finalized without a quorum"
            );
        }
        net.link_all().await;
        net.settle(&[0, 1, 2, 3]).await;
        let h = (0..4).map(|i| net.height(i)).min().unwrap();
        net.assert_roots_agree(&[0, 1, 2, 3], h);
        for i in 0..4 {
            assert_balances(&net, i, 5);
        }
    });
}

#[test]
fn crashed_validator_restarts_from_disk_and_catches_up() {
    let g = genesis(4, WALLETS, 1_000);
    let pk = tx_public([0x42; 32], 0);
    let first = transfers(&g, &pk, 0, 3, 0);
    let second = transfers(&g, &pk, 0, 3, 3);
    runner(13).start(|ctx| async move {
        let mut net = Net::new(ctx.child("net"), 4, g).await;
        net.start_all().await;
        submit_round_robin(&net, &first, &[0, 1, 2, 3]);
        net.settle(&[0, 1, 2, 3]).await;
        let crashed_at = net.height(3);
        net.crash(3);
        // Three of four keep finalizing, and commit more transfers.
        submit_round_robin(&net, &second, &[0, 1, 2]);
        net.settle(&[0, 1, 2]).await;
        net.wait_height(&[0, 1, 2], crashed_at + 5).await;
        // Restart from its own storage: it resumes from its snapshot and backfills from peers.
        net.start(3).await;
        assert!(
            net.height(3) >= crashed_at,
            "restarted validator lost executed blocks"
        );
        let target = net.height(0) + 2;
        net.wait_height(&[0, 1, 2, 3], target).await;
        net.assert_roots_agree(&[0, 1, 2, 3], target);
        assert_balances(&net, 3, 6);
    });
}

#[test]
fn restart_replays_deltas_after_an_epoch_change_snapshot() {
    // Epochs of 4 blocks: each epoch change re-keys the state and writes a snapshot with the
    // ratcheted seed; blocks in between are journaled as deltas. A validator crashed mid-epoch
    // restores the snapshot, replays its deltas, then catches up across further epoch changes.
    let g = genesis(4, WALLETS, 4);
    let txs = transfers(&g, &tx_public([0x42; 32], 0), 0, 2, 0);
    runner(29).start(|ctx| async move {
        let mut net = Net::new(ctx.child("net"), 4, g).await;
        net.start_all().await;
        submit_round_robin(&net, &txs, &[0, 1, 2, 3]);
        net.wait_height(&[0, 1, 2, 3], 6).await;
        let crashed_at = net.height(3);
        assert_ne!(
            crashed_at % 4,
            0,
            "the crash must fall between snapshots (seeded run)"
        );
        net.crash(3);
        net.wait_height(&[0, 1, 2], crashed_at + 9).await;
        net.start(3).await;
        assert_eq!(
            net.height(3),
            crashed_at,
            "restarted validator did not resume exactly where it stopped"
        );
        let target = net.height(0) + 2;
        net.wait_height(&[0, 1, 2, 3], target).await;
        net.assert_roots_agree(&[0, 1, 2, 3], target);
    });
}

#[test]
fn byzantine_conflicter_cannot_stop_honest_validators() {
    use commonware_consensus::simplex::mocks::conflicter;
    use commonware_cryptography::Sha256;
    let g = genesis(4, WALLETS, 1_000);
    let txs = transfers(&g, &tx_public([0x42; 32], 0), 0, 4, 0);
    runner(17).start(|ctx| async move {
        let mut net = Net::new(ctx.child("net"), 4, g).await;
        for i in 0..3 {
            net.start(i).await;
        }
        // Validator 3 signs conflicting votes for every view instead of running consensus.
        let control = net.oracle.control(net.keys[3].clone());
        let votes = control
            .register(veil_node::validator::channels::VOTES, common::QUOTA)
            .await
            .unwrap();
        let participants = commonware_utils::ordered::Set::from_iter_dedup(net.keys.iter().cloned());
        let scheme =
            veil_node::app::Scheme::signer(b"veil/v1/consensus", participants, net.signers[3].clone())
                .unwrap();
        conflicter::Conflicter::<_, _, Sha256>::new(ctx.child("byzantine"), conflicter::Config { scheme })
            .start(votes);

        submit_round_robin(&net, &txs, &[0, 1, 2]);
        net.settle(&[0, 1, 2]).await;
        // And they keep finalizing: ten more blocks with the conflicter still voting.
        let h = (0..3).map(|i| net.height(i)).min().unwrap() + 10;
        net.wait_height(&[0, 1, 2], h).await;
        net.assert_roots_agree(&[0, 1, 2], h);
        for i in 0..3 {
            assert_balances(&net, i, 4);
        }
    });
}

#[test]
fn submissions_are_gossiped_to_every_mempool() {
    let g = genesis(4, WALLETS, 1_000);
    let txs = transfers(&g, &tx_public([0x42; 32], 0), 0, 3, 0);
    runner(19).start(|ctx| async move {
        let mut net = Net::new(ctx.child("net"), 4, g).await;
        net.start_all().await;
        net.wait_height(&[0, 1, 2, 3], 2).await;
        let before = net.nodes[&3].core.stats().applied_txs;
        for tx in &txs {
            net.nodes[&0].core.submit(tx.clone()).unwrap();
        }
        // Validator 3 never saw a submission: gossip must bring it every envelope, either into its
        // mempool or, once included, into its executed state.
        let mut seen_in_mempool = 0;
        for _ in 0..200 {
            seen_in_mempool = seen_in_mempool.max(net.nodes[&3].core.mempool_len());
            if net.nodes[&3].core.stats().applied_txs - before == txs.len() as u64 {
                break;
            }
            ctx.sleep(Duration::from_millis(10)).await;
        }
        assert!(seen_in_mempool > 0, "no envelope reached validator 3's mempool");
        net.settle(&[0, 1, 2, 3]).await;
        assert_eq!(net.nodes[&3].core.stats().applied_txs - before, txs.len() as u64);
    });
}
