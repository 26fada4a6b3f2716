//! The mempool: sequential nonces per sender, dedup, bounds, removal after a block.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use veil_ledger::*;

const ALICE: u8 = 1;
const BOB: u8 = 2;
const CAROL: u8 = 3;

fn setup() -> Ledger {
    Ledger::genesis(&genesis(&[(ALICE, 1_000), (CAROL, 100)], 100), seed()).unwrap()
}

#[test]
fn one_sender_queues_consecutive_nonces() {
    let mut l = setup();
    let mut pool = Mempool::new(100);
    let txs: Vec<Vec<u8>> = (0..4)
        .map(|n| transfer(&l, &key(ALICE), n, addr(BOB), 100))
        .collect();
    for tx in &txs[..3] {
        pool.admit(&l, tx.clone()).unwrap();
    }
    assert_eq!(pool.len(), 3);
    // Duplicate envelope.
    assert_eq!(pool.admit(&l, txs[0].clone()), Err(TxError::Duplicate));
    // Another envelope with a pending nonce.
    let again = transfer(&l, &key(ALICE), 1, addr(CAROL), 1);
    assert_eq!(pool.admit(&l, again), Err(TxError::NoncePending { nonce: 1 }));
    // A gap.
    let gap = transfer(&l, &key(ALICE), 5, addr(BOB), 1);
    assert_eq!(
        pool.admit(&l, gap),
        Err(TxError::NonceGap {
            nonce: 5,
            expected: 3
        })
    );
    // The balance must cover every pending transaction: 3 × 110 pending, 1,000 held.
    let big = transfer(&l, &key(ALICE), 3, addr(BOB), 661);
    let err = pool.admit(&l, big).unwrap_err();
    assert_eq!(
        err,
        TxError::InsufficientBalance {
            need: 1_001,
            have: 1_000
        }
    );
    assert_eq!(err.detail(), "insufficient balance: need 1,001, have 1,000");
    pool.admit(&l, txs[3].clone()).unwrap();
    // Another sender interleaves.
    let carol = transfer(&l, &key(CAROL), 0, addr(BOB), 1);
    pool.admit(&l, carol.clone()).unwrap();
    assert_eq!(pool.len(), 5);
    assert!(pool.contains(&envelope_id(&carol)));
    // Taken in admission order, within limits, without removal.
    assert_eq!(
        pool.take(100, usize::MAX),
        [txs.clone(), vec![carol.clone()]].concat()
    );
    assert_eq!(pool.take(2, usize::MAX), txs[..2].to_vec());
    assert_eq!(pool.take(100, txs[0].len() * 2), txs[..2].to_vec());
    assert_eq!(pool.len(), 5);

    // A block includes the first two of Alice's: those leave, the rest stay valid.
    let included = pool.take(2, usize::MAX);
    let out = block(&mut l, &included);
    assert_eq!(out.applied, 2);
    pool.on_block(&l, &included);
    assert_eq!(pool.len(), 3);
    assert_eq!(
        pool.take(100, usize::MAX),
        vec![txs[2].clone(), txs[3].clone(), carol.clone()]
    );
    // Alice continues at nonce 4.
    pool.admit(&l, transfer(&l, &key(ALICE), 4, addr(BOB), 1))
        .unwrap();
    assert_eq!(pool.len(), 4);
    let all = pool.take(100, usize::MAX);
    let out = block(&mut l, &all);
    assert_eq!(out.applied, 4, "{out:?}");
    pool.on_block(&l, &all);
    assert!(pool.is_empty());
}

#[test]
fn stale_transactions_leave_after_a_block() {
    let mut l = setup();
    let mut pool = Mempool::new(100);
    let pending = transfer(&l, &key(ALICE), 0, addr(BOB), 5);
    let next = transfer(&l, &key(ALICE), 1, addr(BOB), 5);
    pool.admit(&l, pending).unwrap();
    pool.admit(&l, next.clone()).unwrap();
    // Another envelope with nonce 0 reached a block through another validator.
    let rival = transfer(&l, &key(ALICE), 0, addr(CAROL), 7);
    block(&mut l, std::slice::from_ref(&rival));
    pool.on_block(&l, &[rival]);
    // Nonce 0 is used: that one is gone; nonce 1 is now next and stays.
    assert_eq!(pool.take(10, usize::MAX), vec![next.clone()]);
    // A block spends Alice's balance so the queued one no longer fits: it leaves.
    let drain = transfer(&l, &key(ALICE), 1, addr(CAROL), 1_000 - 17 - 10);
    block(&mut l, std::slice::from_ref(&drain));
    pool.on_block(&l, &[]);
    assert!(pool.is_empty());
}

#[test]
fn old_epochs_leave_and_the_pool_is_bounded() {
    let g = genesis(&[(ALICE, 1_000), (CAROL, 100)], 2);
    let mut l = Ledger::genesis(&g, seed()).unwrap();
    let mut pool = Mempool::new(2);
    let a = transfer(&l, &key(ALICE), 0, addr(BOB), 1);
    let c = transfer(&l, &key(CAROL), 0, addr(BOB), 1);
    pool.admit(&l, a).unwrap();
    pool.admit(&l, c).unwrap();
    let third = transfer(&l, &key(ALICE), 1, addr(BOB), 1);
    assert_eq!(pool.admit(&l, third), Err(TxError::MempoolFull { max: 2 }));
    // Epoch 1 (height 2): epoch-0 envelopes stay (grace); epoch 2 (height 4): they leave.
    block(&mut l, &[]);
    block(&mut l, &[]);
    pool.on_block(&l, &[]);
    assert_eq!(pool.len(), 2);
    block(&mut l, &[]);
    block(&mut l, &[]);
    assert_eq!(l.epoch(), 2);
    pool.on_block(&l, &[]);
    assert!(pool.is_empty());
    // Garbage is refused with the ledger's error.
    assert!(matches!(
        pool.admit(&l, vec![1, 2, 3]),
        Err(TxError::Malformed(_))
    ));
}

#[test]
fn executing_with_the_mempools_opened_transactions_gives_the_same_block() {
    let mut a = setup();
    let mut b = setup();
    let mut pool = Mempool::new(100);
    let mut txs: Vec<Vec<u8>> = (0..3)
        .map(|n| transfer(&a, &key(ALICE), n, addr(BOB), 10))
        .collect();
    for tx in &txs {
        pool.admit(&a, tx.clone()).unwrap();
    }
    // Plus one the pool never saw, and garbage.
    txs.push(transfer(&a, &key(CAROL), 0, addr(BOB), 1));
    txs.push(vec![9; 40]);
    assert!(pool.opened(&envelope_id(&txs[0])).is_some());
    assert!(pool.opened(&envelope_id(&txs[3])).is_none());
    let with = a.execute_block_with(1, &txs, |id| pool.opened(id)).unwrap();
    let without = b.execute_block(1, &txs).unwrap();
    assert_eq!(with, without);
    assert_eq!(with.applied, 4);
    assert_eq!(a.snapshot(), b.snapshot());
}

#[test]
fn envelopes_opened_elsewhere_are_admitted_with_every_state_check() {
    // A node opens envelopes with a detached opener (no lock), then admits them.
    let mut l = setup();
    let mut pool = Mempool::new(100);
    let opener = l.opener();
    let a0 = transfer(&l, &key(ALICE), 0, addr(BOB), 100);
    let a1 = transfer(&l, &key(ALICE), 1, addr(BOB), 100);
    let opened0 = opener.open(&a0).unwrap();
    assert_eq!(opened0, l.open_envelope_bytes(&a0).unwrap());
    // The opened transaction must belong to the envelope it is admitted with.
    assert!(matches!(
        pool.admit_opened(&l, a1.clone(), opened0.clone()),
        Err(TxError::Malformed(_))
    ));
    pool.admit_opened(&l, a0.clone(), opened0.clone()).unwrap();
    assert_eq!(pool.admit_check_room(&envelope_id(&a0)), Err(TxError::Duplicate));
    assert_eq!(
        pool.admit_opened(&l, a0.clone(), opened0.clone()),
        Err(TxError::Duplicate)
    );
    // State checks run at admission, not at opening: once a0 executed, an envelope opened
    // before is refused for its used nonce.
    let stale = opener.open(&a0).unwrap();
    block(&mut l, std::slice::from_ref(&a0));
    pool.on_block(&l, std::slice::from_ref(&a0));
    assert!(matches!(
        pool.admit_opened(&l, a0.clone(), stale),
        Err(TxError::NonceUsed { nonce: 0, .. })
    ));
    pool.admit_opened(&l, a1.clone(), opener.open(&a1).unwrap())
        .unwrap();
    // A garbage envelope fails to open, with the same error as the ledger's.
    let mut bad = a1.clone();
    let last = bad.len() - 1;
    bad[last] ^= 1;
    assert_eq!(
        opener.open(&bad).unwrap_err(),
        l.open_envelope_bytes(&bad).unwrap_err()
    );
}

#[test]
fn an_opener_from_before_an_epoch_change_still_opens_the_previous_epoch() {
    // Epochs of 2 blocks: an opener taken in epoch 0 opens epoch-0 envelopes; after the ledger
    // moved to epoch 1, admission still takes them (previous epoch) and refuses them one epoch later.
    let mut l = Ledger::genesis(&genesis(&[(ALICE, 1_000)], 2), seed()).unwrap();
    let opener = l.opener();
    let old = transfer(&l, &key(ALICE), 0, addr(BOB), 1);
    block(&mut l, &[]);
    block(&mut l, &[]);
    assert_eq!(l.epoch(), 1);
    let mut pool = Mempool::new(10);
    pool.admit_opened(&l, old.clone(), opener.open(&old).unwrap())
        .unwrap();
    block(&mut l, &[]);
    block(&mut l, &[]);
    assert_eq!(l.epoch(), 2);
    let mut pool = Mempool::new(10);
    assert!(matches!(
        pool.admit_opened(&l, old.clone(), opener.open(&old).unwrap()),
        Err(TxError::WrongEpoch { got: 0, .. })
    ));
}
