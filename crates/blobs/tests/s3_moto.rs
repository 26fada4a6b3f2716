//! The S3 backend against a local S3-compatible server (`moto_server` from PyPI's `moto[server]`), bound
//! to 127.0.0.1 on a free port. Built only with `--features s3`; skipped, saying why, when `moto_server` is
//! not installed (`pip install 'moto[server]'`).
#![cfg(feature = "s3")]
// Test code: a failed unwrap is a failed test (clippy's test exemption misses helper functions).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use veil_blobs::{BlobAddress, BlobConfig, BlobError};

struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_moto() -> Option<(Server, u16)> {
    let port = TcpListener::bind("127.0.0.1:0").ok()?.local_addr().ok()?.port();
    let child = match Command::new("moto_server")
        .args(["-H", "127.0.0.1", "-p", &port.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
    {
        Ok(c) => c,
        Err(e) => {
            eprintln!(
                "SKIPPED: moto_server is not installed ({e}); pip install 'moto[server]' to run this test"
            );
            return None;
        }
    };
    let server = Server(child);
    let deadline = Instant::now() + Duration::from_secs(30);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            Instant::now() < deadline,
            "moto_server did not start listening on port {port}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    Some((server, port))
}

/// Creates a bucket with a raw (unsigned; moto does not check) `PUT /bucket`.
fn create_bucket(port: u16, bucket: &str) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(
        s,
        "PUT /{bucket} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut resp = String::new();
    s.read_to_string(&mut resp).unwrap();
    assert!(
        resp.starts_with("HTTP/1.1 200") || resp.starts_with("HTTP/1.0 200"),
        "{resp}"
    );
}

fn sample(n: usize, seed: u8) -> Vec<u8> {
    (0..n)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

#[test]
fn s3_backend_against_moto() {
    let Some((_server, port)) = start_moto() else {
        return;
    };
    // SAFETY: the only test in this binary; no other thread reads the environment yet.
    unsafe {
        std::env::set_var("AWS_ACCESS_KEY_ID", "veil-test");
        std::env::set_var("AWS_SECRET_ACCESS_KEY", "veil-test-secret");
    }
    create_bucket(port, "veil-models");
    let config: BlobConfig = serde_json::from_value(serde_json::json!({
        "kind": "s3",
        "bucket": "veil-models",
        "endpoint": format!("http://127.0.0.1:{port}"),
        "region": "us-east-1",
        "prefix": "test/",
    }))
    .unwrap();
    let store = config.open().unwrap();

    // Small: one PUT.
    let small = sample(1000, 1);
    let a = store.put_bytes(&small).unwrap();
    assert_eq!(a, BlobAddress::of(&small));
    assert_eq!(store.put_bytes(&small).unwrap(), a, "idempotent");
    assert!(store.exists(&a).unwrap());
    assert_eq!(store.size(&a).unwrap(), 1000);
    assert_eq!(store.get_bytes(&a).unwrap(), small);

    // Large, unknown address: multipart to tmp/, then copied into place.
    let large = sample(20 << 20, 2);
    let b = store.put(&mut &large[..]).unwrap();
    assert_eq!(b, BlobAddress::of(&large));
    assert_eq!(store.get_bytes(&b).unwrap(), large);

    // Large, known address (put_file): multipart straight to the final key.
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("big");
    let big = sample(17 << 20, 3);
    std::fs::write(&f, &big).unwrap();
    let c = store.put_file(&f).unwrap();
    assert_eq!(c, BlobAddress::of(&big));
    assert_eq!(store.size(&c).unwrap(), big.len() as u64);

    // A wrong claimed address stores nothing, small or large.
    let wrong = BlobAddress::of(b"nope");
    assert!(matches!(
        store.put_expected(&wrong, &mut &small[..]),
        Err(BlobError::HashMismatch { .. })
    ));
    assert!(matches!(
        store.put_expected(&wrong, &mut &big[..]),
        Err(BlobError::HashMismatch { .. })
    ));
    assert!(!store.exists(&wrong).unwrap());

    let mut all = vec![a, b, c];
    all.sort();
    assert_eq!(store.list().unwrap(), all, "tmp/ uploads are gone and not listed");

    // Corruption in the bucket is caught on read and names the blob: overwrite `a`'s object with a raw PUT.
    let key = format!("test/sha256/{}/{}", &a.hex()[..2], a.hex());
    let script = format!(
        "import boto3, sys; boto3.client('s3', endpoint_url='http://127.0.0.1:{port}', region_name='us-east-1', \
         aws_access_key_id='veil-test', aws_secret_access_key='veil-test-secret')\
         .put_object(Bucket='veil-models', Key='{key}', Body=sys.stdin.buffer.read())"
    );
    let mut bad = small.clone();
    bad[10] ^= 1;
    let mut py = Command::new("python3")
        .args(["-c", &script])
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    py.stdin.take().unwrap().write_all(&bad).unwrap();
    assert!(
        py.wait().unwrap().success(),
        "boto3 (installed with moto) could not overwrite the object"
    );
    let err = store.get_bytes(&a).unwrap_err();
    assert!(matches!(err, BlobError::Corrupted { .. }), "{err}");
    assert!(err.to_string().contains(&a.to_string()));

    assert!(store.delete(&b).unwrap());
    assert!(!store.delete(&b).unwrap());
    assert!(matches!(store.get(&b), Err(BlobError::NotFound { .. })));
}
