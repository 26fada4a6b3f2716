//! Provisioning a model key: the key must be sealed to this enclave and for this bundle, and the bundle
//! must authenticate chunk by chunk before anything is loaded.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use veil_blobs::BlobAddress;
use veil_bundle::DataKey;
use veil_worker::{BundleSource, ModelSpec, Worker, WorkerConfig, WorkerError};

#[derive(Default)]
struct MemBundles(Mutex<HashMap<BlobAddress, Vec<u8>>>);

impl BundleSource for MemBundles {
    fn open(&self, address: &BlobAddress) -> veil_worker::Result<Box<dyn std::io::Read + Send>> {
        let bytes = self.0.lock().unwrap().get(address).cloned();
        let bytes = bytes.ok_or_else(|| WorkerError::Config(format!("no bundle {address}")))?;
        Ok(Box::new(std::io::Cursor::new(bytes)))
    }
}

struct Fixture {
    worker: Worker,
    bundles: Arc<MemBundles>,
    address: BlobAddress,
    key: DataKey,
    _dir: tempfile::TempDir,
}

/// A worker serving `m` from a sealed bundle of 3 MiB that is not a GGUF file.
fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let plain: Vec<u8> = (0..3u32 << 20).map(|i| (i % 251) as u8).collect();
    let key = DataKey::generate().unwrap();
    let mut bundle = Vec::new();
    let sealed = veil_bundle::seal(&plain[..], plain.len() as u64, &key, &mut bundle, &mut |_| {}).unwrap();
    let bundles = Arc::new(MemBundles::default());
    bundles.0.lock().unwrap().insert(sealed.address, bundle);
    let platform =
        veil_platform::sim::SimPlatform::start(veil_platform::sim::SimConfig::new(dir.path())).unwrap();
    let config = WorkerConfig {
        models: vec![ModelSpec {
            name: "m".into(),
            bundle: sealed.address,
        }],
        ..WorkerConfig::default()
    };
    let worker = Worker::new(config, Box::new(platform), bundles.clone()).unwrap();
    Fixture {
        worker,
        bundles,
        address: sealed.address,
        key,
        _dir: dir,
    }
}

#[test]
fn keys_must_be_sealed_to_this_enclave_and_bundle() {
    let f = fixture();
    let good = veil_bundle::seal_key(&f.worker.hpke_public_key(), &f.address, &f.key).unwrap();

    let err = f.worker.provision("other", &f.address, &good).unwrap_err();
    assert!(matches!(err, WorkerError::UnknownModel(_)), "{err}");

    let elsewhere = BlobAddress::of(b"another bundle");
    let err = f.worker.provision("m", &elsewhere, &good).unwrap_err();
    assert!(err.to_string().contains("is served from bundle"), "{err}");

    let stranger = veil_crypto::seal::HpkeSecretKey::generate().unwrap();
    let to_other = veil_bundle::seal_key(&stranger.public_key(), &f.address, &f.key).unwrap();
    let err = f.worker.provision("m", &f.address, &to_other).unwrap_err();
    assert!(err.to_string().contains("cannot open the data key"), "{err}");

    let for_other_bundle = veil_bundle::seal_key(&f.worker.hpke_public_key(), &elsewhere, &f.key).unwrap();
    assert!(f.worker.provision("m", &f.address, &for_other_bundle).is_err());

    let mut flipped = good.clone();
    let last = flipped.len() - 1;
    flipped[last] ^= 1;
    assert!(f.worker.provision("m", &f.address, &flipped).is_err());
}

#[test]
fn a_tampered_bundle_chunk_is_refused_before_loading() {
    let f = fixture();
    let good = veil_bundle::seal_key(&f.worker.hpke_public_key(), &f.address, &f.key).unwrap();
    let original = f.bundles.0.lock().unwrap()[&f.address].clone();
    for pos in [100, (1 << 20) + 5000, original.len() - 10] {
        let mut t = original.clone();
        t[pos] ^= 1;
        f.bundles.0.lock().unwrap().insert(f.address, t);
        let err = f.worker.provision("m", &f.address, &good).unwrap_err();
        assert!(matches!(err, WorkerError::Bundle(_)), "flip at {pos}: {err}");
    }
    let mut truncated = original.clone();
    truncated.truncate(original.len() - 100);
    f.bundles.0.lock().unwrap().insert(f.address, truncated);
    assert!(matches!(
        f.worker.provision("m", &f.address, &good),
        Err(WorkerError::Bundle(_))
    ));
    // The untampered bundle decrypts, and the engine refuses it: it is not a GGUF model.
    f.bundles.0.lock().unwrap().insert(f.address, original);
    let err = f.worker.provision("m", &f.address, &good).unwrap_err();
    assert!(matches!(err, WorkerError::Engine(_)), "{err}");
}

#[test]
fn a_bundle_whose_sealed_digest_lies_is_refused_and_not_served() {
    // Only a holder of the data key can make this: every chunk authenticates, but the SHA-256 sealed
    // after the model is not the model's. The engine may start loading it (the SHA-256 is checked while
    // it loads), but provisioning fails with the digest error and nothing is served.
    let f = fixture();
    let plain: Vec<u8> = (0..3u32 << 20).map(|i| (i % 251) as u8).collect();
    let header = veil_bundle::BundleHeader {
        format: veil_bundle::Format::Gguf,
        plaintext_len: plain.len() as u64,
        chunk_size: veil_bundle::DEFAULT_CHUNK_SIZE,
    }
    .encode();
    let mut sealed = plain.clone();
    sealed.extend_from_slice(&[0x5a; 32]);
    let mut bundle = header.clone();
    veil_crypto::stream::encrypt(
        f.key.as_bytes(),
        &header,
        veil_bundle::DEFAULT_CHUNK_SIZE,
        &sealed[..],
        &mut bundle,
    )
    .unwrap();
    f.bundles.0.lock().unwrap().insert(f.address, bundle);
    let good = veil_bundle::seal_key(&f.worker.hpke_public_key(), &f.address, &f.key).unwrap();
    let err = f.worker.provision("m", &f.address, &good).unwrap_err();
    assert!(
        matches!(err, WorkerError::Bundle(veil_bundle::BundleError::DigestMismatch)),
        "{err}"
    );
    assert_eq!(
        err.to_string(),
        "bundle: bundle rejected: the decrypted model's SHA-256 does not match the one sealed with it"
    );
    assert!(f.worker.engine("m").is_none());
}

#[tokio::test]
async fn provision_endpoint_answers_with_clear_statuses() {
    let f = fixture();
    let running = f.worker.start().await.unwrap();
    let client = veil_client::WorkerClient::new(
        running.url(),
        veil_client::ClientConfig::new(veil_attest::Policy::development()),
    )
    .unwrap();
    let w = client.attest().await.unwrap();
    assert_eq!(w.models.len(), 1);
    assert!(!w.models[0].ready);
    let good = veil_bundle::seal_key(&w.hpke_public_key, &f.address, &f.key).unwrap();
    let addr = f.address.to_string();
    for (model, bundle, sealed, status) in [
        ("nope", addr.as_str(), good.clone(), 404),
        ("m", "sha256:zz", good.clone(), 400),
        ("m", addr.as_str(), vec![1, 2, 3], 400),
        ("m", addr.as_str(), good.clone(), 500),
    ] {
        let err = client.provision(model, bundle, sealed).await.unwrap_err();
        assert!(
            matches!(&err, veil_client::ClientError::Rejected { status: s, .. } if *s == status),
            "{model} {bundle}: {err}"
        );
    }
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    let r = http
        .post(format!("{}/v1/provision", running.url()))
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    running.stop().await.unwrap();
}
