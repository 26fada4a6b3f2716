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

/// Every way `open_to_memfd_and` can run: hashing while decrypting or while loading, on 1 to 3 threads.
const MEMFD_WAYS: [(HashModel, usize); 6] = [
    (HashModel::WhileDecrypting, 1),
    (HashModel::WhileDecrypting, 2),
    (HashModel::WhileDecrypting, 3),
    (HashModel::WhileLoading, 1),
    (HashModel::WhileLoading, 2),
    (HashModel::WhileLoading, 3),
];

/// Opens `b` into memory every way; `load` reads the memory file back. All ways must agree with `open`
/// (same model, or same error), and `load` must run only on bundles whose every chunk authenticated.
fn memfd_agrees_with_open(b: &[u8], key: &DataKey, what: &str) {
    let plain = open_vec(b, key).map(|(m, _)| m);
    for (hash, threads) in MEMFD_WAYS {
        let loaded = std::cell::Cell::new(false);
        let memory = open_to_memfd_with(b, key, "t", threads, hash, |mem| {
            loaded.set(true);
            std::fs::read(mem.proc_path()).unwrap()
        })
        .map(|(m, _)| m);
        match (&plain, memory) {
            (Ok(a), Ok(b)) => assert_eq!(*a, b, "{what} ({hash:?}, {threads} threads)"),
            (Err(a), Err(b)) => {
                assert_eq!(
                    a.to_string(),
                    b.to_string(),
                    "{what} ({hash:?}, {threads} threads)"
                );
                // Only a model whose SHA-256 is checked while it loads is ever handed on, and only
                // once it authenticated: then its SHA-256 is what failed.
                if loaded.get() {
                    assert_eq!(hash, HashModel::WhileLoading, "{what}");
                    assert!(
                        matches!(b, BundleError::DigestMismatch),
                        "{what}: loaded, then {b}"
                    );
                }
            }
            (a, b) => panic!("{what} ({hash:?}, {threads} threads): open gave {a:?}, into memory {b:?}"),
        }
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
    for (hash, threads) in MEMFD_WAYS {
        let (loads, drops) = (std::cell::Cell::new(0), std::cell::Cell::new(0));
        let result = open_to_memfd_with(&lying[..], &key, "lying", threads, hash, |_| {
            loads.set(loads.get() + 1);
            Engine(&drops)
        });
        assert!(matches!(result, Err(BundleError::DigestMismatch)), "{hash:?}");
        // Loaded while its SHA-256 was checked (or not loaded at all), and dropped unused.
        assert_eq!(loads.get(), drops.get(), "{hash:?}");
        assert_eq!(loads.get(), u32::from(hash == HashModel::WhileLoading));
    }
    memfd_agrees_with_open(&lying, &key, "a lying digest");
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
