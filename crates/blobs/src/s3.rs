//! The S3-compatible backend (cargo feature `s3`): any S3 API (AWS, MinIO, Ceph, R2, …) through the
//! `object_store` crate. Keys: `<prefix>sha256/<first 2 hex digits>/<64 hex digits>`.
//!
//! The store owns a small tokio runtime and blocks on it, so it is called like the local store: from plain
//! threads, or from `spawn_blocking` in async code (never from inside an async task).

use std::io::{self, Read};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use futures_util::StreamExt;
use futures_util::stream::BoxStream;
use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::path::Path as ObjPath;
use object_store::{ObjectStore, ObjectStoreExt, WriteMultipart};

use crate::{BlobAddress, BlobError, BlobReader, BlobStore, Hasher, Result};

/// Blobs up to this size are uploaded with one PUT straight to their final key; larger ones in parts.
const SINGLE_PUT_MAX: usize = 8 << 20;
/// Multipart part size (S3's minimum is 5 MiB) and how many parts may be in flight.
const PART_SIZE: usize = 8 << 20;
const PARTS_IN_FLIGHT: usize = 4;
const READ_BUF: usize = 1 << 20;

/// Where the S3-compatible store is. Credentials come from the environment (`AWS_ACCESS_KEY_ID`,
/// `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`, web identity, container or instance credentials).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct S3Config {
    pub bucket: String,
    pub endpoint: Option<String>,
    pub region: Option<String>,
    /// Key prefix (`""` or e.g. `"veil/"`).
    pub prefix: String,
    /// Allow plain HTTP; `None`: only for a loopback endpoint.
    pub allow_http: Option<bool>,
}

/// Owns the runtime; shuts it down without blocking, so dropping a store inside async code is safe.
#[derive(Debug)]
struct Runtime(Option<tokio::runtime::Runtime>);

impl Runtime {
    fn block_on<F: Future>(&self, f: F) -> Result<F::Output> {
        match &self.0 {
            Some(rt) => Ok(rt.block_on(f)),
            None => Err(BlobError::Config("the S3 store's runtime is gone".into())),
        }
    }
}

impl Drop for Runtime {
    fn drop(&mut self) {
        if let Some(rt) = self.0.take() {
            rt.shutdown_background();
        }
    }
}

/// Blobs in an S3-compatible bucket.
///
/// A put of a known address (e.g. [`BlobStore::put_file`]) uploads straight to the final key as a
/// multipart upload that is completed only if the hash matches, so nothing half-written or wrong is ever
/// visible. A put of unknown bytes larger than 8 MiB uploads to `<prefix>tmp/…` and is then copied to its
/// address (S3 copies a single object of at most 5 GB this way: put larger blobs with `put_file`).
#[derive(Debug, Clone)]
pub struct S3Store {
    store: Arc<AmazonS3>,
    rt: Arc<Runtime>,
    bucket: String,
    prefix: String,
}

fn backend(context: impl Into<String>) -> impl FnOnce(object_store::Error) -> BlobError {
    let context = context.into();
    move |e| BlobError::Backend {
        context,
        message: e.to_string(),
    }
}

fn is_loopback(endpoint: &str) -> bool {
    let rest = endpoint.strip_prefix("http://").unwrap_or(endpoint);
    ["127.", "localhost", "[::1]"].iter().any(|p| rest.starts_with(p))
}

impl S3Store {
    pub fn open(config: &S3Config) -> Result<Self> {
        if config.bucket.is_empty() {
            return Err(BlobError::Config("the S3 bucket name is empty".into()));
        }
        let mut builder = AmazonS3Builder::from_env().with_bucket_name(&config.bucket);
        if let Some(endpoint) = &config.endpoint {
            builder = builder.with_endpoint(endpoint);
        }
        if let Some(region) = &config.region {
            builder = builder.with_region(region);
        }
        let allow_http = config
            .allow_http
            .unwrap_or_else(|| config.endpoint.as_deref().is_some_and(is_loopback));
        if allow_http {
            builder = builder.with_allow_http(true);
        }
        let store = builder.build().map_err(|e| {
            BlobError::Config(format!(
                "cannot set up the S3 client for bucket {:?}: {e}",
                config.bucket
            ))
        })?;
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("veil-blobs-s3")
            .enable_all()
            .build()
            .map_err(BlobError::io("cannot start the S3 client's runtime"))?;
        let prefix = config.prefix.trim_matches('/');
        Ok(Self {
            store: Arc::new(store),
            rt: Arc::new(Runtime(Some(rt))),
            bucket: config.bucket.clone(),
            prefix: if prefix.is_empty() {
                String::new()
            } else {
                format!("{prefix}/")
            },
        })
    }

    fn key(&self, address: &BlobAddress) -> Result<ObjPath> {
        let hex = address.hex();
        self.path(&format!("{}sha256/{}/{hex}", self.prefix, &hex[..2]))
    }

    fn path(&self, key: &str) -> Result<ObjPath> {
        ObjPath::parse(key).map_err(|e| BlobError::Config(format!("invalid object key {key:?}: {e}")))
    }

    fn head_size(&self, address: &BlobAddress) -> Result<Option<u64>> {
        let key = self.key(address)?;
        match self.rt.block_on(self.store.head(&key))? {
            Ok(meta) => Ok(Some(meta.size)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(backend(format!("cannot look up {address}"))(e)),
        }
    }

    fn tmp_key(&self) -> Result<ObjPath> {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        self.path(&format!("{}tmp/{}-{nanos}-{n}", self.prefix, std::process::id()))
    }

    /// Uploads `first` then the rest of `data` as a multipart upload to `key`; returns the hash of all of
    /// it, after calling `accept` (which decides whether the upload is completed or aborted).
    fn multipart(
        &self,
        key: &ObjPath,
        first: Vec<u8>,
        data: &mut dyn Read,
        accept: impl FnOnce(&BlobAddress) -> Result<()>,
    ) -> Result<BlobAddress> {
        let upload = self
            .rt
            .block_on(self.store.put_multipart(key))?
            .map_err(backend(format!("cannot start an upload to {key}")))?;
        let mut upload = WriteMultipart::new_with_chunk_size(upload, PART_SIZE);
        let mut hasher = Hasher::new();
        hasher.update(&first);
        let mut next = first;
        let result = loop {
            let chunk = Bytes::from(std::mem::take(&mut next));
            let pushed = self.rt.block_on(async {
                upload.put(chunk);
                upload.wait_for_capacity(PARTS_IN_FLIGHT).await
            })?;
            if let Err(e) = pushed {
                break Err(backend(format!("cannot upload a part of {key}"))(e));
            }
            let mut buf = vec![0u8; READ_BUF];
            match read_full(data, &mut buf) {
                Ok(0) => break Ok(()),
                Ok(n) => {
                    buf.truncate(n);
                    hasher.update(&buf);
                    next = buf;
                }
                Err(e) => {
                    break Err(crate::reader::into_blob_error(
                        e,
                        "cannot read the blob's data".into(),
                    ));
                }
            }
        };
        let address = hasher.finish();
        match result.and_then(|()| accept(&address)) {
            Ok(()) => {
                self.rt
                    .block_on(upload.finish())?
                    .map_err(backend(format!("cannot complete the upload to {key}")))?;
                Ok(address)
            }
            Err(e) => {
                if let Ok(Err(abort)) = self.rt.block_on(upload.abort()) {
                    tracing::warn!(%key, error = %abort, "cannot abort a failed multipart upload");
                }
                Err(e)
            }
        }
    }

    fn put_inner(&self, data: &mut dyn Read, expected: Option<&BlobAddress>) -> Result<BlobAddress> {
        let check = |actual: &BlobAddress| match expected {
            Some(e) if e != actual => Err(BlobError::HashMismatch {
                expected: *e,
                actual: *actual,
            }),
            _ => Ok(()),
        };
        let mut first = vec![0u8; SINGLE_PUT_MAX + 1];
        let n = read_full(data, &mut first)
            .map_err(|e| crate::reader::into_blob_error(e, "cannot read the blob's data".into()))?;
        first.truncate(n);
        if n <= SINGLE_PUT_MAX {
            let address = BlobAddress::of(&first);
            check(&address)?;
            if self.head_size(&address)? == Some(n as u64) {
                return Ok(address);
            }
            let key = self.key(&address)?;
            self.rt
                .block_on(self.store.put(&key, first.into()))?
                .map_err(backend(format!("cannot upload {address}")))?;
            tracing::info!(%address, len = n, "blob stored");
            return Ok(address);
        }
        if let Some(expected) = expected {
            let key = self.key(expected)?;
            if self.head_size(expected)?.is_some() {
                // Already stored; still consume and check the data, so that a wrong claim is reported.
                let mut h = Hasher::new();
                h.update(&first);
                let mut buf = vec![0u8; READ_BUF];
                loop {
                    match read_full(data, &mut buf) {
                        Ok(0) => break,
                        Ok(n) => h.update(&buf[..n]),
                        Err(e) => {
                            return Err(crate::reader::into_blob_error(
                                e,
                                "cannot read the blob's data".into(),
                            ));
                        }
                    }
                }
                check(&h.finish())?;
                return Ok(*expected);
            }
            let address = self.multipart(&key, first, data, check)?;
            tracing::info!(%address, "blob stored");
            return Ok(address);
        }
        let tmp = self.tmp_key()?;
        let address = self.multipart(&tmp, first, data, |_| Ok(()))?;
        let result = (|| {
            if self.head_size(&address)?.is_none() {
                let key = self.key(&address)?;
                self.rt
                    .block_on(self.store.copy(&tmp, &key))?
                    .map_err(backend(format!("cannot copy the upload to {address}")))?;
            }
            Ok(address)
        })();
        if let Ok(Err(e)) = self.rt.block_on(self.store.delete(&tmp)) {
            tracing::warn!(key = %tmp, error = %e, "cannot delete a temporary upload");
        }
        if result.is_ok() {
            tracing::info!(%address, "blob stored");
        }
        result
    }
}

fn read_full(r: &mut dyn Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// Reads an object's byte stream by blocking on the store's runtime.
struct StreamReader {
    stream: BoxStream<'static, object_store::Result<Bytes>>,
    current: Bytes,
    rt: Arc<Runtime>,
}

impl Read for StreamReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.current.is_empty() {
            let next = self.rt.block_on(self.stream.next()).map_err(io::Error::other)?;
            match next {
                None => return Ok(0),
                Some(Ok(b)) => self.current = b,
                Some(Err(e)) => return Err(io::Error::other(e)),
            }
        }
        let n = buf.len().min(self.current.len());
        buf[..n].copy_from_slice(&self.current.split_to(n));
        Ok(n)
    }
}

impl BlobStore for S3Store {
    fn put(&self, data: &mut dyn Read) -> Result<BlobAddress> {
        self.put_inner(data, None)
    }

    fn put_expected(&self, expected: &BlobAddress, data: &mut dyn Read) -> Result<()> {
        self.put_inner(data, Some(expected)).map(|_| ())
    }

    fn get(&self, address: &BlobAddress) -> Result<BlobReader> {
        let key = self.key(address)?;
        let got = match self.rt.block_on(self.store.get(&key))? {
            Ok(g) => g,
            Err(object_store::Error::NotFound { .. }) => {
                return Err(BlobError::NotFound {
                    address: *address,
                    store: self.describe(),
                });
            }
            Err(e) => return Err(backend(format!("cannot read {address}"))(e)),
        };
        let len = got.meta.size;
        let reader = StreamReader {
            stream: got.into_stream(),
            current: Bytes::new(),
            rt: self.rt.clone(),
        };
        Ok(BlobReader::new(*address, len, Box::new(reader)))
    }

    fn exists(&self, address: &BlobAddress) -> Result<bool> {
        Ok(self.head_size(address)?.is_some())
    }

    fn size(&self, address: &BlobAddress) -> Result<u64> {
        self.head_size(address)?.ok_or_else(|| BlobError::NotFound {
            address: *address,
            store: self.describe(),
        })
    }

    fn list(&self) -> Result<Vec<BlobAddress>> {
        let root = self.path(&format!("{}sha256", self.prefix))?;
        let metas = self.rt.block_on(async {
            let mut out = Vec::new();
            let mut s = self.store.list(Some(&root));
            while let Some(m) = s.next().await {
                out.push(m?);
            }
            Ok::<_, object_store::Error>(out)
        })?;
        let metas = metas.map_err(backend(format!("cannot list {}", self.describe())))?;
        let mut out: Vec<BlobAddress> = metas
            .iter()
            .filter_map(|m| {
                let name = m.location.filename()?;
                let a = BlobAddress::parse(&format!("{}{name}", crate::PREFIX)).ok()?;
                (m.location.as_ref() == self.key(&a).ok()?.as_ref()).then_some(a)
            })
            .collect();
        out.sort();
        Ok(out)
    }

    fn delete(&self, address: &BlobAddress) -> Result<bool> {
        let existed = self.exists(address)?;
        if existed {
            let key = self.key(address)?;
            self.rt
                .block_on(self.store.delete(&key))?
                .map_err(backend(format!("cannot delete {address}")))?;
        }
        Ok(existed)
    }

    fn describe(&self) -> String {
        format!("S3 bucket {}/{}", self.bucket, self.prefix)
    }
}
