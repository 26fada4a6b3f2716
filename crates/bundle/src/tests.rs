use super::*;

const CS: u32 = 64;

fn model(n: usize) -> Vec<u8> {
    let mut m = b"GGUF".to_vec();
    m.extend((0..n.saturating_sub(4)).map(|i| (i * 13 % 251) as u8));
    m.truncate(n);
    m
}

fn small() -> SealOptions {
    SealOptions {
        format: Format::Gguf,
        chunk_size: CS,
    }
}

fn seal_vec(m: &[u8], key: &DataKey) -> (Vec<u8>, Sealed) {
    let mut out = Vec::new();
    let s = seal_with(&small(), m, m.len() as u64, key, &mut out, &mut |_| {}).unwrap();
    (out, s)
}

fn open_vec(b: &[u8], key: &DataKey) -> Result<(Vec<u8>, BundleInfo)> {
    let mut out = Vec::new();
    let info = open(b, key, &mut out)?;
    Ok((out, info))
}

fn header_len() -> usize {
    small_header(0).encode().len()
}

fn small_header(len: u64) -> BundleHeader {
    BundleHeader {
        format: Format::Gguf,
        plaintext_len: len,
        chunk_size: CS,
    }
}

#[test]
fn round_trips_at_every_boundary() {
    let key = DataKey::generate().unwrap();
    // 32 bytes of digest follow the model, so boundaries shift by 32.
    for n in [0, 1, 31, 32, 33, 63, 64, 65, 96, 97, 128, 1000] {
        let m = model(n);
        let (b, s) = seal_vec(&m, &key);
        assert_eq!(s.bundle_len, b.len() as u64);
        assert_eq!(
            b.len() as u64,
            bundle_len(Format::Gguf, n as u64, CS),
            "length for {n}"
        );
        assert_eq!(s.address, BlobAddress::of(&b));
        assert_eq!(s.plaintext_sha256, <[u8; 32]>::from(Sha256::digest(&m)));
        let (out, info) = open_vec(&b, &key).unwrap();
        assert_eq!(out, m, "round trip for {n}");
        assert_eq!(info.header, small_header(n as u64));
        assert_eq!(info.plaintext_sha256, s.plaintext_sha256);
    }
}

#[test]
fn default_options_use_1_mib_chunks_and_report_progress() {
    let key = DataKey::generate().unwrap();
    let m = model(3 * (1 << 20) + 5);
    let mut seen = Vec::new();
    let mut out = Vec::new();
    let s = seal(&m[..], m.len() as u64, &key, &mut out, &mut |done| {
        seen.push(done)
    })
    .unwrap();
    assert_eq!(s.header.chunk_size, 1 << 20);
    assert_eq!(seen.last(), Some(&(m.len() as u64)));
    assert!(seen.windows(2).all(|w| w[0] < w[1]));
    assert_eq!(open_vec(&out, &key).unwrap().0, m);
}

#[test]
fn header_is_in_front_and_authenticated() {
    let key = DataKey::generate().unwrap();
    let m = model(200);
    let (b, _) = seal_vec(&m, &key);
    assert_eq!(&b[..header_len()], &small_header(200).encode()[..]);
    assert_eq!(&b[header_len()..header_len() + 8], b"VEILSTRM");
    // Changing the announced size (a valid header otherwise) fails authentication at chunk 0.
    let mut t = b.clone();
    t[..header_len()].copy_from_slice(&small_header(199).encode());
    let err = open_vec(&t, &key).unwrap_err();
    assert!(matches!(err, BundleError::Decrypt(_)), "{err}");
    assert!(err.to_string().contains("chunk 0 failed authentication"), "{err}");
}

#[test]
fn every_flipped_byte_is_rejected() {
    let key = DataKey::generate().unwrap();
    let (b, _) = seal_vec(&model(150), &key);
    for i in 0..b.len() {
        let mut t = b.clone();
        t[i] ^= 0x10;
        let err = open_vec(&t, &key).unwrap_err();
        let msg = err.to_string();
        // Each error is specific: a header problem or a named chunk.
        assert!(
            msg.contains("not a Veil model bundle")
                || msg.contains("unsupported bundle version")
                || msg.contains("unsupported encrypted stream version")
                || msg.contains("malformed bundle header")
                || msg.contains("unknown model format")
                || msg.contains("failed authentication")
                || msg.contains("bad magic")
                || msg.contains("outside"),
            "flip at {i}: {msg}"
        );
    }
}

#[test]
fn header_flips_give_clear_errors() {
    let key = DataKey::generate().unwrap();
    let (b, _) = seal_vec(&model(100), &key);
    let flip = |i: usize, v: u8| {
        let mut t = b.clone();
        t[i] = v;
        open_vec(&t, &key).unwrap_err()
    };
    assert!(matches!(flip(0, b'X'), BundleError::NotABundle(_)));
    assert!(matches!(
        flip(8, 7),
        BundleError::UnsupportedVersion { found: 7, .. }
    ));
    assert!(matches!(flip(12, b'x'), BundleError::UnknownFormat { .. }));
    assert!(matches!(flip(9, 0xff), BundleError::Malformed(_)));
    // A plain GGUF file is not a bundle.
    let err = open_vec(&model(100), &key).unwrap_err();
    assert!(err.to_string().starts_with("not a Veil model bundle"), "{err}");
}

#[test]
fn truncation_at_every_length_is_rejected() {
    let key = DataKey::generate().unwrap();
    let (b, _) = seal_vec(&model(300), &key);
    for n in 0..b.len() {
        assert!(open_vec(&b[..n], &key).is_err(), "truncated to {n} accepted");
    }
    let mut longer = b.clone();
    longer.push(0);
    assert!(open_vec(&longer, &key).is_err());
}

#[test]
fn swapped_dropped_and_foreign_chunks_are_rejected() {
    let key = DataKey::generate().unwrap();
    let (b, _) = seal_vec(&model(300), &key);
    let body = header_len() + stream::HEADER_LEN;
    let chunk = CS as usize + 16;
    let (head, rest) = b.split_at(body);
    let chunks: Vec<&[u8]> = rest.chunks(chunk).collect();
    assert!(chunks.len() >= 4);
    let join = |order: &[usize]| {
        let mut v = head.to_vec();
        for &i in order {
            v.extend_from_slice(chunks[i]);
        }
        v
    };
    let all: Vec<usize> = (0..chunks.len()).collect();
    assert_eq!(join(&all), b);
    let mut swapped = all.clone();
    swapped.swap(1, 2);
    let err = open_vec(&join(&swapped), &key).unwrap_err().to_string();
    assert!(err.contains("chunk 1 failed authentication"), "{err}");
    let mut dropped = all.clone();
    dropped.remove(2);
    assert!(open_vec(&join(&dropped), &key).is_err());
    // The same model sealed again (another salt) cannot lend a chunk.
    let (b2, _) = seal_vec(&model(300), &key);
    let mut spliced = b.clone();
    spliced[body + chunk..body + 2 * chunk].copy_from_slice(&b2[body + chunk..body + 2 * chunk]);
    assert!(
        open_vec(&spliced, &key)
            .unwrap_err()
            .to_string()
            .contains("chunk 1")
    );
}

#[test]
fn wrong_key_is_rejected() {
    let (b, _) = seal_vec(&model(100), &DataKey::generate().unwrap());
    let err = open_vec(&b, &DataKey::generate().unwrap()).unwrap_err();
    assert!(matches!(err, BundleError::Decrypt(_)));
    assert!(err.to_string().contains("not its data key"), "{err}");
}

#[test]
fn a_model_of_the_wrong_size_is_refused_when_sealing() {
    let key = DataKey::generate().unwrap();
    let m = model(100);
    for announced in [99u64, 101, 0] {
        let err = seal_with(&small(), &m[..], announced, &key, Vec::new(), &mut |_| {}).unwrap_err();
        assert!(
            matches!(err, BundleError::ModelSize { expected, .. } if expected == announced),
            "{announced}: {err}"
        );
    }
}

#[test]
fn memfd_open_gives_identical_bytes() {
    let key = DataKey::generate().unwrap();
    let m = model(5 * CS as usize + 7);
    let (b, s) = seal_vec(&m, &key);
    let (mem, info) = open_to_memfd(&b[..], &key, "test").unwrap();
    assert_eq!(mem.len(), m.len() as u64);
    assert_eq!(info.plaintext_sha256, s.plaintext_sha256);
    assert_eq!(std::fs::read(mem.proc_path()).unwrap(), m);

    // A larger model, across many pipe buffers, with the default chunk size.
    let big = model(3 * (1 << 20) + 123);
    let mut bb = Vec::new();
    seal(&big[..], big.len() as u64, &key, &mut bb, &mut |_| {}).unwrap();
    let (mem, _) = open_to_memfd(&bb[..], &key, "big").unwrap();
    assert_eq!(std::fs::read(mem.proc_path()).unwrap(), big);

    // Tampered or wrong key: no model comes back.
    let mut t = b.clone();
    let last = t.len() - 1;
    t[last] ^= 1;
    assert!(matches!(
        open_to_memfd(&t[..], &key, "t"),
        Err(BundleError::Decrypt(_))
    ));
    assert!(open_to_memfd(&b[..], &DataKey::generate().unwrap(), "k").is_err());
    assert!(matches!(
        open_to_memfd(&b[..10], &key, "short"),
        Err(BundleError::Malformed(_))
    ));
}

#[test]
fn bundles_from_a_blob_store_open() {
    use veil_blobs::{BlobStore, LocalStore};
    let dir = tempfile::tempdir().unwrap();
    let store = LocalStore::open(dir.path()).unwrap();
    let key = DataKey::generate().unwrap();
    let m = model(1000);
    let (b, s) = seal_vec(&m, &key);
    assert_eq!(store.put_bytes(&b).unwrap(), s.address);
    let (mem, _) = open_to_memfd(store.get(&s.address).unwrap(), &key, "from-store").unwrap();
    assert_eq!(std::fs::read(mem.proc_path()).unwrap(), m);
    // A blob corrupted at rest fails (here the AEAD sees it first; the store's hash check backs it up).
    let path = store.path_of(&s.address);
    let mut bad = b.clone();
    bad[b.len() / 2] ^= 1;
    std::fs::write(&path, &bad).unwrap();
    assert!(open_to_memfd(store.get(&s.address).unwrap(), &key, "bad").is_err());
}

/// Opens `b` into memory on 1 to 3 decrypting threads; `load` waits for the model and reads it back.
/// Every way must agree with `open` (same model, or same error), and `load` must get the model only from
/// a bundle that passed every check (otherwise its wait fails).
fn memfd_agrees_with_open(b: &[u8], key: &DataKey, what: &str) {
    let plain = open_vec(b, key).map(|(m, _)| m);
    for threads in 1..=3 {
        let memory = open_to_memfd_with(b, key, "t", threads, |pending| {
            let model = pending.into_model()?;
            Ok::<_, veil_engine::Error>(std::fs::read(model.proc_path()).unwrap())
        });
        match (&plain, memory) {
            (Ok(a), Ok((Ok(b), _))) => assert_eq!(*a, b, "{what} ({threads} threads)"),
            (Err(a), Err(b)) => assert_eq!(a.to_string(), b.to_string(), "{what} ({threads} threads)"),
            (a, b) => panic!("{what} ({threads} threads): open gave {a:?}, into memory {b:?}"),
        }
    }
    // And what `load` saw of a refused bundle: never the model.
    if plain.is_err() {
        let seen = std::cell::Cell::new(None);
        let result = open_to_memfd_with(b, key, "t", 1, |pending| seen.set(Some(pending.wait_ready())));
        assert!(result.is_err(), "{what}");
        // (A bundle refused at its header never reaches `load`.)
        assert!(
            !matches!(seen.take(), Some(Ok(()))),
            "{what}: the model was released"
        );
    }
}

/// A bundle sealed under `key` whose model is `m` but whose sealed SHA-256 is `digest`: what only a
/// holder of the data key can make.
fn seal_with_digest(m: &[u8], digest: [u8; 32], key: &DataKey) -> Vec<u8> {
    let header = small_header(m.len() as u64).encode();
    let mut plaintext = m.to_vec();
    plaintext.extend_from_slice(&digest);
    let mut out = header.clone();
    stream::encrypt(key.as_bytes(), &header, CS, &plaintext[..], &mut out).unwrap();
    out
}

#[test]
fn a_sealed_digest_that_lies_is_refused_and_what_was_loaded_is_dropped() {
    struct Engine<'a>(&'a std::cell::Cell<u32>);
    impl Drop for Engine<'_> {
        fn drop(&mut self) {
            self.0.set(self.0.get() + 1);
        }
    }
    let key = DataKey::generate().unwrap();
    let m = model(5 * CS as usize + 7);
    let mut digest: [u8; 32] = Sha256::digest(&m).into();
    // The honest digest opens: the crafting is right.
    assert_eq!(open_vec(&seal_with_digest(&m, digest, &key), &key).unwrap().0, m);
    digest[31] ^= 1;
    let lying = seal_with_digest(&m, digest, &key);
    assert!(matches!(open_vec(&lying, &key), Err(BundleError::DigestMismatch)));
    assert!(matches!(
        open_to_memfd(&lying[..], &key, "lying"),
        Err(BundleError::DigestMismatch)
    ));
    for threads in 1..=3 {
        let drops = std::cell::Cell::new(0);
        let result = open_to_memfd_with(&lying[..], &key, "lying", threads, |pending| {
            // Every chunk authenticates; only the digest is wrong, and the model is never released.
            let refused = pending.wait_ready().unwrap_err();
            assert!(refused.contains("SHA-256"), "{refused}");
            Engine(&drops)
        });
        assert!(matches!(result, Err(BundleError::DigestMismatch)), "{threads}");
        // What the load made was dropped unused.
        assert_eq!(drops.get(), 1, "{threads}");
    }
    memfd_agrees_with_open(&lying, &key, "a lying digest");
}

/// The engine can start on a model's first bytes (its GGUF metadata) while the rest is still being read
/// and decrypted: `load` gets them with the bundle not yet read to its end.
#[test]
fn the_model_s_first_bytes_reach_load_before_the_bundle_is_read() {
    struct Held<'a> {
        bundle: &'a [u8],
        pos: usize,
        /// Reading stops here until `go` says to go on.
        hold_at: usize,
        go: std::sync::mpsc::Receiver<()>,
    }
    impl Read for Held<'_> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            if self.pos == self.hold_at {
                // A bound, so that a load that waits for the whole bundle fails instead of hanging.
                self.go
                    .recv_timeout(std::time::Duration::from_secs(30))
                    .map_err(|_| io::Error::other("load never got the first bytes"))?;
            }
            let end = if self.pos < self.hold_at {
                self.hold_at
            } else {
                self.bundle.len()
            };
            let n = buf.len().min(end - self.pos);
            buf[..n].copy_from_slice(&self.bundle[self.pos..self.pos + n]);
            self.pos += n;
            Ok(n)
        }
    }
    let key = DataKey::generate().unwrap();
    let m = model(20 * CS as usize + 5);
    let (b, _) = seal_vec(&m, &key);
    let (go_tx, go) = std::sync::mpsc::channel();
    // Three chunks' worth of ciphertext, then the reader waits.
    let held = Held {
        bundle: &b,
        pos: 0,
        hold_at: b.len() / 3,
        go,
    };
    let (got, info) = open_to_memfd_with(held, &key, "held", 1, |pending| {
        pending.wait_for(2 * u64::from(CS)).unwrap();
        let first = std::fs::read(pending.proc_path()).unwrap();
        go_tx.send(()).unwrap();
        let model = pending.into_model().unwrap();
        (first, std::fs::read(model.proc_path()).unwrap())
    })
    .unwrap();
    assert_eq!(got.0[..2 * CS as usize], m[..2 * CS as usize]);
    assert_eq!(got.1, m);
    assert_eq!(info.plaintext_sha256, <[u8; 32]>::from(Sha256::digest(&m)));
}

#[test]
fn memfd_open_accepts_and_refuses_exactly_what_open_does() {
    let key = DataKey::generate().unwrap();
    let (b, _) = seal_vec(&model(300), &key);
    let same = |t: &[u8], what: &str| memfd_agrees_with_open(t, &key, what);
    same(&b, "intact");
    // Every way the model and its digest can fall across chunks (CS = 64, the digest is 32 bytes).
    for n in [0, 1, 31, 32, 33, 63, 64, 65, 96, 97, 128, 129] {
        same(&seal_vec(&model(n), &key).0, &format!("a {n}-byte model"));
    }
    for i in 0..b.len() {
        let mut t = b.clone();
        t[i] ^= 0x10;
        same(&t, &format!("flip at {i}"));
    }
    for n in 0..b.len() {
        same(&b[..n], &format!("truncated to {n}"));
    }
    let mut longer = b.clone();
    longer.push(0);
    same(&longer, "one byte more");
}
