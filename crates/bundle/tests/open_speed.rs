//! Not a check: how long `open_to_memfd` takes to open a 94 MiB bundle from a local blob store (wall
//! time and the process's CPU time, the better figure on a busy machine). Run with
//! `cargo test --release -p veil-bundle --test open_speed -- --ignored --nocapture`.
#![allow(clippy::unwrap_used)]

use std::time::Instant;

use veil_blobs::{BlobStore, LocalStore};
use veil_bundle::DataKey;

/// User plus system CPU time of this process, in seconds (from `/proc/self/stat`, 10 ms ticks).
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap();
    let fields: Vec<&str> = stat.rsplit_once(") ").unwrap().1.split(' ').collect();
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    ticks as f64 / 100.0
}

#[test]
#[ignore]
fn open_to_memfd_speed() {
    let len = 94usize << 20;
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    let model: Vec<u8> = (0..len / 8)
        .flat_map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x.to_le_bytes()
        })
        .collect();
    let dir = tempfile::tempdir().unwrap();
    let store = LocalStore::open(dir.path()).unwrap();
    let key = DataKey::generate().unwrap();
    let mut bundle = Vec::new();
    veil_bundle::seal(&model[..], len as u64, &key, &mut bundle, &mut |_| {}).unwrap();
    let address = store.put_bytes(&bundle).unwrap();
    drop((bundle, model));
    for _ in 0..7 {
        let (wall, cpu) = (Instant::now(), cpu_seconds());
        let (memory, _) = veil_bundle::open_to_memfd(store.get(&address).unwrap(), &key, "m").unwrap();
        eprintln!(
            "open_to_memfd 94 MiB: {:.3} s wall, {:.2} s CPU",
            wall.elapsed().as_secs_f64(),
            cpu_seconds() - cpu
        );
        drop(memory);
    }
}
