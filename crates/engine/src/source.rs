//! Where a model's bytes come from: a file, or a file that exists only in memory.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Instant;

use memfd::{FileSeal, MemfdOptions};

use crate::error::{Error, Result};
use crate::gguf;

/// A model file that exists only in memory: an anonymous `memfd_create(2)` file, never on disk.
///
/// The confidential worker decrypts a model straight into one of these. llama.cpp opens it as
/// `/proc/self/fd/N` and maps it with mmap (shared page-cache pages: no second copy in memory). The
/// file is sealed once written (no write, grow or shrink), so the weights cannot change under the
/// engine. The descriptor stays open as long as this value lives; an engine loaded from it keeps it.
#[derive(Debug)]
pub struct InMemoryModel {
    memfd: memfd::Memfd,
    len: u64,
    name: String,
}

/// `/proc/self/fd/N` of an open file: how llama.cpp (which takes a path) opens a memory file.
fn fd_path(file: &File) -> PathBuf {
    PathBuf::from(format!("/proc/self/fd/{}", file.as_raw_fd()))
}

fn create_memfd(name: &str) -> Result<memfd::Memfd> {
    MemfdOptions::default()
        .allow_sealing(true)
        .close_on_exec(true)
        .create(format!("veil-model:{name}"))
        .map_err(|e| Error::Memory(format!("memfd_create failed: {e}")))
}

impl InMemoryModel {
    /// Copies a model from `reader` (e.g. a decrypting reader) into a new sealed memory file.
    pub fn from_reader(name: &str, reader: &mut impl Read) -> Result<Self> {
        let memfd = create_memfd(name)?;
        let mut file = memfd.as_file();
        let len = std::io::copy(reader, &mut file)
            .map_err(|e| Error::Memory(format!("cannot write the model into memory: {e}")))?;
        file.flush().map_err(|e| Error::Memory(e.to_string()))?;
        Self::seal(memfd, len, name)
    }

    /// Seals a filled memory file (no write, grow or shrink from now on).
    fn seal(memfd: memfd::Memfd, len: u64, name: &str) -> Result<Self> {
        memfd
            .add_seals(&[
                FileSeal::SealShrink,
                FileSeal::SealGrow,
                FileSeal::SealWrite,
                FileSeal::SealSeal,
            ])
            .map_err(|e| Error::Memory(format!("cannot seal the memory file: {e}")))?;
        memfd
            .as_file()
            .seek(SeekFrom::Start(0))
            .map_err(|e| Error::Memory(e.to_string()))?;
        Ok(Self {
            memfd,
            len,
            name: name.to_owned(),
        })
    }

    /// Copies model bytes into a new sealed memory file.
    pub fn from_bytes(name: &str, bytes: &[u8]) -> Result<Self> {
        Self::from_reader(name, &mut &bytes[..])
    }

    /// The path through which llama.cpp opens it: `/proc/self/fd/N`.
    pub fn proc_path(&self) -> PathBuf {
        fd_path(self.memfd.as_file())
    }

    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub(crate) fn file(&self) -> &File {
        self.memfd.as_file()
    }
}

/// A memory file of a size fixed up front, filled by position: several threads may write their own
/// ranges at once (`pwrite(2)`, no shared cursor). [`InMemoryModelWriter::finish`] seals it into an
/// [`InMemoryModel`]. Bytes never written read as zeros: the caller must write every range before
/// finishing. Dropping it unfinished frees the memory (once no [`PendingModel`] of it is left).
///
/// The engine may start loading the model before it is complete: [`InMemoryModelWriter::pending`]
/// gives a [`PendingModel`] to load ([`ModelSource::Pending`]) and a [`ModelRelease`] to say when it is
/// ready; see [`PendingModel`] for what the engine reads before that.
#[derive(Debug)]
pub struct InMemoryModelWriter {
    memfd: memfd::Memfd,
    len: u64,
    name: String,
    progress: Arc<Progress>,
}

impl InMemoryModelWriter {
    /// A new memory file of `len` bytes. No memory is used until bytes are written.
    pub fn new(name: &str, len: u64) -> Result<Self> {
        let memfd = create_memfd(name)?;
        memfd
            .as_file()
            .set_len(len)
            .map_err(|e| Error::Memory(format!("cannot size the memory file to {len} bytes: {e}")))?;
        Ok(Self {
            memfd,
            len,
            name: name.to_owned(),
            progress: Arc::default(),
        })
    }

    /// Writes `bytes` at `offset`; the range must lie within the file.
    pub fn write_at(&self, offset: u64, bytes: &[u8]) -> Result<()> {
        if offset
            .checked_add(bytes.len() as u64)
            .is_none_or(|end| end > self.len)
        {
            return Err(Error::Memory(format!(
                "cannot write {} bytes at {offset} into a {}-byte memory file",
                bytes.len(),
                self.len
            )));
        }
        self.memfd
            .as_file()
            .write_all_at(bytes, offset)
            .map_err(|e| Error::Memory(format!("cannot write the model into memory: {e}")))
    }

    /// Says that the first `upto` bytes are written and final: a [`PendingModel`]'s reader waiting for
    /// them goes on. Only ever moves forward.
    pub fn written_upto(&self, upto: u64) {
        self.progress.update(|fill| {
            if let Fill::Writing { upto: at } = fill {
                *at = (*at).max(upto.min(self.len));
            }
        });
    }

    /// A handle through which the engine can start loading the model while it is still being written,
    /// and the [`ModelRelease`] that lets it use the weights once they are complete and checked.
    pub fn pending(&self) -> Result<(PendingModel, ModelRelease)> {
        // A descriptor of its own, read-only, with its own file position.
        let file = File::open(fd_path(self.memfd.as_file()))
            .map_err(|e| Error::Memory(format!("cannot open the memory file for the engine: {e}")))?;
        let memfd = memfd::Memfd::try_from_file(file)
            .map_err(|_| Error::Memory("the engine's descriptor is not a memory file".into()))?;
        let pending = PendingModel {
            model: InMemoryModel {
                memfd,
                len: self.len,
                name: self.name.clone(),
            },
            progress: Arc::clone(&self.progress),
        };
        let release = ModelRelease {
            progress: Arc::clone(&self.progress),
            inode: inode(self.memfd.as_file())?,
        };
        Ok((pending, release))
    }

    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Seals the file (no write, grow or shrink from now on) and returns the model.
    pub fn finish(self) -> Result<InMemoryModel> {
        InMemoryModel::seal(self.memfd, self.len, &self.name)
    }
}

fn inode(file: &File) -> Result<(u64, u64)> {
    let meta = file
        .metadata()
        .map_err(|e| Error::Memory(format!("cannot stat the memory file: {e}")))?;
    Ok((meta.dev(), meta.ino()))
}

/// How far a model being written has come; shared by its writer, its release and its pending handles.
#[derive(Debug, Default)]
struct Progress {
    fill: Mutex<Fill>,
    changed: Condvar,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Fill {
    /// The first `upto` bytes are written and final.
    Writing { upto: u64 },
    /// Complete, sealed and checked (since then): the engine may use every byte.
    Ready(Instant),
    /// It will never be complete: why.
    Failed(String),
}

impl Default for Fill {
    fn default() -> Self {
        Fill::Writing { upto: 0 }
    }
}

impl Progress {
    fn update(&self, f: impl FnOnce(&mut Fill)) {
        // A poisoned lock only means a panic elsewhere while holding it; the state itself is whole.
        let mut fill = self.fill.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut fill);
        drop(fill);
        self.changed.notify_all();
    }

    /// Waits until the first `upto` bytes are final (`upto: None`: until the model is ready); returns
    /// how many bytes are final then (`u64::MAX` once ready).
    fn wait(&self, upto: Option<u64>) -> std::result::Result<u64, String> {
        let mut fill = self.fill.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            match &*fill {
                Fill::Ready(_) => return Ok(u64::MAX),
                Fill::Failed(why) => return Err(why.clone()),
                Fill::Writing { upto: at } if upto.is_some_and(|want| *at >= want) => return Ok(*at),
                Fill::Writing { .. } => {
                    fill = self.changed.wait(fill).unwrap_or_else(|p| p.into_inner());
                }
            }
        }
    }
}

/// A model still being written into memory ([`InMemoryModelWriter::pending`]), for the engine to start
/// loading: [`ModelSource::Pending`]. The engine reads its GGUF metadata as soon as those bytes are
/// written, and parses it (the tokenizer, the tensor layout) while the rest is still arriving; it waits
/// for the [`ModelRelease`] before it uses a single byte of the weights. So whoever fills the model
/// decides what "ready" means (e.g. every chunk authenticated and the whole model's digest checked);
/// what it marks as written must already be trustworthy on its own (e.g. authenticated chunk by
/// chunk), as the engine parses it before then. If the release fails, the load fails.
#[derive(Debug)]
pub struct PendingModel {
    /// Its own read-only descriptor of the memory file, sealed by the time the model is released.
    model: InMemoryModel,
    progress: Arc<Progress>,
}

impl PendingModel {
    /// The path through which llama.cpp opens it: `/proc/self/fd/N` (a read-only descriptor).
    pub fn proc_path(&self) -> PathBuf {
        self.model.proc_path()
    }

    /// Waits until the first `upto` bytes are written (or the model is ready); the error says why the
    /// model will never be complete.
    pub fn wait_for(&self, upto: u64) -> std::result::Result<(), String> {
        self.progress.wait(Some(upto.min(self.model.len))).map(drop)
    }

    /// Waits until the model is released: complete, sealed and checked.
    pub fn wait_ready(&self) -> std::result::Result<(), String> {
        self.progress.wait(None).map(drop)
    }

    /// A handle on this model's progress that outlives it (e.g. kept while an engine loads it).
    pub fn watch(&self) -> ModelWatch {
        ModelWatch(Arc::clone(&self.progress))
    }

    /// Waits until the model is released, then gives it as a sealed [`InMemoryModel`].
    pub fn into_model(self) -> Result<InMemoryModel> {
        self.wait_ready().map_err(Error::ModelIncomplete)?;
        Ok(self.model)
    }

    /// Reads the GGUF header as its bytes arrive.
    fn arriving(&self) -> Arriving<'_> {
        Arriving { model: self, pos: 0 }
    }
}

/// Watches a [`PendingModel`]'s progress ([`PendingModel::watch`]).
#[derive(Debug, Clone)]
pub struct ModelWatch(Arc<Progress>);

impl ModelWatch {
    /// Waits until the model is released: complete, sealed and checked; the error says why it never
    /// will be.
    pub fn wait_ready(&self) -> std::result::Result<(), String> {
        self.0.wait(None).map(drop)
    }

    /// When the model was released, if it was.
    pub fn ready_at(&self) -> Option<Instant> {
        match &*self.0.fill.lock().unwrap_or_else(|p| p.into_inner()) {
            Fill::Ready(at) => Some(*at),
            _ => None,
        }
    }

    /// Why the model will never be complete, if that is already known.
    pub fn failure(&self) -> Option<String> {
        match &*self.0.fill.lock().unwrap_or_else(|p| p.into_inner()) {
            Fill::Failed(why) => Some(why.clone()),
            _ => None,
        }
    }
}

/// Reads a [`PendingModel`], waiting for each range to be written first.
struct Arriving<'a> {
    model: &'a PendingModel,
    pos: u64,
}

impl Read for Arriving<'_> {
    /// Reads what is already written from the position on, waiting only until at least one byte is.
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let len = self.model.model.len;
        if buf.is_empty() || self.pos >= len {
            return Ok(0);
        }
        let written = self
            .model
            .progress
            .wait(Some(self.pos + 1))
            .map_err(std::io::Error::other)?;
        let want = buf
            .len()
            .min(usize::try_from(written.min(len) - self.pos).unwrap_or(usize::MAX));
        let n = self.model.model.file().read_at(&mut buf[..want], self.pos)?;
        self.pos += n as u64;
        Ok(n)
    }
}

impl Seek for Arriving<'_> {
    fn seek(&mut self, to: SeekFrom) -> std::io::Result<u64> {
        let target = match to {
            SeekFrom::Start(n) => Some(n),
            SeekFrom::End(d) => self.model.model.len.checked_add_signed(d),
            SeekFrom::Current(d) => self.pos.checked_add_signed(d),
        };
        self.pos = target
            .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::InvalidInput, "seek out of range"))?;
        Ok(self.pos)
    }
}

/// Lets the engine use a [`PendingModel`]'s weights ([`ModelRelease::ready`]), or fails its load.
/// Dropped without either, it fails the load ("the model was not completed"), so an engine never waits
/// forever on a writer that gave up or panicked.
#[derive(Debug)]
pub struct ModelRelease {
    progress: Arc<Progress>,
    inode: (u64, u64),
}

impl ModelRelease {
    /// The model is complete and checked: `sealed` is what [`InMemoryModelWriter::finish`] returned
    /// for it (so it can no longer change).
    pub fn ready(self, sealed: &InMemoryModel) -> Result<()> {
        if inode(sealed.file())? != self.inode {
            let e = "internal: released with another model's memory file".to_owned();
            self.fail(e.clone());
            return Err(Error::Memory(e));
        }
        self.progress.update(|fill| *fill = Fill::Ready(Instant::now()));
        Ok(())
    }

    /// The model will never be complete: the engine's load fails with `why`.
    pub fn fail(self, why: impl Into<String>) {
        let why = why.into();
        self.progress.update(|fill| {
            if !matches!(fill, Fill::Ready(_)) {
                *fill = Fill::Failed(why);
            }
        });
    }
}

impl Drop for ModelRelease {
    fn drop(&mut self) {
        self.progress.update(|fill| {
            if matches!(fill, Fill::Writing { .. }) {
                *fill = Fill::Failed("the model was not completed".into());
            }
        });
    }
}

/// What to load.
#[derive(Debug)]
pub enum ModelSource {
    /// A GGUF file on disk.
    Path(PathBuf),
    /// A GGUF that exists only in memory.
    Memory(InMemoryModel),
    /// A GGUF still being written into memory: the engine parses its metadata as it arrives and waits
    /// for its release before it uses the weights (see [`PendingModel`]).
    Pending(PendingModel),
}

impl ModelSource {
    /// The path llama.cpp opens.
    pub(crate) fn llama_path(&self) -> PathBuf {
        match self {
            ModelSource::Path(p) => p.clone(),
            ModelSource::Memory(m) => m.proc_path(),
            ModelSource::Pending(m) => m.proc_path(),
        }
    }

    /// How errors name this model.
    pub(crate) fn display_path(&self) -> PathBuf {
        match self {
            ModelSource::Path(p) => p.clone(),
            ModelSource::Memory(m) | ModelSource::Pending(PendingModel { model: m, .. }) => {
                PathBuf::from(format!("<in-memory model {}>", m.name))
            }
        }
    }

    /// Checks the GGUF header (before llama.cpp sees the file) and returns it. For a pending model this
    /// waits until the whole header is written (everything llama.cpp reads before the weights).
    pub(crate) fn check(&self) -> Result<gguf::GgufHeader> {
        let shown = self.display_path();
        let header = match self {
            ModelSource::Path(path) => {
                let file = open_model_file(path)?;
                let len = file
                    .metadata()
                    .map_err(|e| Error::Io {
                        context: format!("cannot stat {}", path.display()),
                        source: e,
                    })?
                    .len();
                gguf::read_header(file, len)
            }
            ModelSource::Memory(m) => gguf::read_header(m.file(), m.len),
            ModelSource::Pending(m) => {
                let header = gguf::read_header(m.arriving(), m.model.len);
                // A model that will never be complete says why, not that its header looked cut short.
                if let Err(why) = m.wait_for(header.as_ref().map_or(0, |h| h.data_start)) {
                    return Err(Error::ModelIncomplete(why));
                }
                header
            }
        };
        let header = header.map_err(|problem| match problem {
            gguf::GgufProblem::NotGguf(reason) => Error::NotGguf {
                path: shown.clone(),
                reason,
            },
            gguf::GgufProblem::Truncated(reason) => Error::TruncatedGguf {
                path: shown.clone(),
                reason,
            },
        })?;
        match header.architecture.as_deref() {
            None => Err(Error::NotGguf {
                path: shown,
                reason: "its metadata has no general.architecture".into(),
            }),
            Some(arch) if !gguf::SUPPORTED_ARCHITECTURES.contains(&arch) => {
                Err(Error::UnsupportedArchitecture {
                    path: shown,
                    architecture: arch.to_owned(),
                })
            }
            Some(_) => Ok(header),
        }
    }
}

fn open_model_file(path: &Path) -> Result<File> {
    match File::open(path) {
        Ok(f) => {
            let meta = f.metadata().map_err(|e| Error::Io {
                context: format!("cannot stat {}", path.display()),
                source: e,
            })?;
            if meta.is_dir() {
                return Err(Error::NotGguf {
                    path: path.to_path_buf(),
                    reason: "it is a directory".into(),
                });
            }
            Ok(f)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(Error::ModelNotFound {
            path: path.to_path_buf(),
        }),
        Err(e) => Err(Error::Io {
            context: format!("cannot open {}", path.display()),
            source: e,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_model_is_sealed_and_reachable_through_proc() {
        let bytes = crate::gguf::tests::build(&[("general.architecture", "llama")], 4);
        let m = InMemoryModel::from_bytes("t", &bytes).unwrap();
        assert_eq!(m.len(), bytes.len() as u64);
        // Reading it back through /proc/self/fd/N gives the same bytes (what llama.cpp will do).
        assert_eq!(std::fs::read(m.proc_path()).unwrap(), bytes);
        // Sealed: it cannot be written any more.
        let mut f = m.file();
        assert!(f.write_all(b"x").is_err());
        let header = ModelSource::Memory(m).check().unwrap();
        assert_eq!(header.architecture.as_deref(), Some("llama"));
    }

    #[test]
    fn a_writer_fills_by_position_from_several_threads_then_seals() {
        let bytes = crate::gguf::tests::build(&[("general.architecture", "llama")], 4000);
        let w = InMemoryModelWriter::new("w", bytes.len() as u64).unwrap();
        assert_eq!(w.len(), bytes.len() as u64);
        let pieces: Vec<(usize, &[u8])> = bytes.chunks(100).enumerate().map(|(i, c)| (i * 100, c)).collect();
        std::thread::scope(|s| {
            for half in [0, 1] {
                let (w, pieces) = (&w, &pieces);
                // Each thread writes every other piece, last to first.
                s.spawn(move || {
                    for (offset, piece) in pieces.iter().skip(half).step_by(2).rev() {
                        w.write_at(*offset as u64, piece).unwrap();
                    }
                });
            }
        });
        let end = bytes.len() as u64;
        assert!(w.write_at(end, b"x").is_err());
        assert!(w.write_at(end - 1, b"xy").is_err());
        assert!(w.write_at(u64::MAX, b"x").is_err());
        let m = w.finish().unwrap();
        assert_eq!(m.len(), end);
        assert_eq!(std::fs::read(m.proc_path()).unwrap(), bytes);
        let mut f = m.file();
        assert!(f.write_all(b"x").is_err());
        assert!(f.set_len(1).is_err());
    }

    #[test]
    fn a_pending_model_is_read_as_it_is_written_and_released_whole() {
        let bytes = crate::gguf::tests::build(&[("general.architecture", "llama")], 40_000);
        let len = bytes.len() as u64;
        let w = InMemoryModelWriter::new("p", len).unwrap();
        let (pending, release) = w.pending().unwrap();
        let watch = pending.watch();
        std::thread::scope(|s| {
            // The header check waits for the whole header (it arrives in pieces, last piece first).
            let checking = s.spawn(|| {
                ModelSource::Pending(pending)
                    .check()
                    .map(|h| (h.data_start, h.architecture))
            });
            let header_end = crate::gguf::read_header(std::io::Cursor::new(&bytes), len)
                .unwrap()
                .data_start as usize;
            for piece in bytes[..header_end].chunks(7).rev() {
                let at = piece.as_ptr() as usize - bytes.as_ptr() as usize;
                w.write_at(at as u64, piece).unwrap();
            }
            w.written_upto(header_end as u64 - 1);
            std::thread::sleep(std::time::Duration::from_millis(50));
            assert!(
                !checking.is_finished(),
                "the check did not wait for the header's last byte"
            );
            w.written_upto(header_end as u64);
            let (data_start, arch) = checking.join().unwrap().unwrap();
            assert_eq!((data_start, arch.as_deref()), (header_end as u64, Some("llama")));
        });
        assert_eq!(watch.ready_at(), None);
        w.write_at(0, &bytes).unwrap();
        let sealed = w.finish().unwrap();
        release.ready(&sealed).unwrap();
        assert!(watch.ready_at().is_some());
        assert_eq!(watch.wait_ready(), Ok(()));
    }

    #[test]
    fn a_pending_model_that_is_never_completed_fails_every_wait_with_the_reason() {
        let w = InMemoryModelWriter::new("f", 1000).unwrap();
        let (pending, release) = w.pending().unwrap();
        std::thread::scope(|s| {
            let waiting = s.spawn(|| pending.wait_for(500));
            std::thread::sleep(std::time::Duration::from_millis(20));
            release.fail("chunk 3 failed authentication");
            assert_eq!(
                waiting.join().unwrap(),
                Err("chunk 3 failed authentication".into())
            );
        });
        assert!(pending.wait_ready().is_err());
        let err = ModelSource::Pending(pending).check().unwrap_err();
        assert!(
            matches!(&err, Error::ModelIncomplete(why) if why.contains("chunk 3")),
            "{err}"
        );

        // Dropped unreleased (the writer gave up or panicked): the load fails instead of waiting forever.
        let w = InMemoryModelWriter::new("d", 1000).unwrap();
        let (pending, release) = w.pending().unwrap();
        w.written_upto(1000);
        assert_eq!(pending.wait_for(1000), Ok(()));
        drop((w, release));
        assert_eq!(pending.wait_ready(), Err("the model was not completed".into()));
        let err = pending.into_model().unwrap_err();
        assert!(err.to_string().contains("was not completed"), "{err}");
    }

    #[test]
    fn a_release_is_only_for_its_own_sealed_model() {
        let w = InMemoryModelWriter::new("a", 8).unwrap();
        let (pending, release) = w.pending().unwrap();
        let other = InMemoryModel::from_bytes("b", b"GGUFGGUF").unwrap();
        assert!(release.ready(&other).is_err());
        assert!(pending.wait_ready().is_err());
        // The engine's descriptor cannot write the model, even before it is sealed.
        assert!(pending.model.file().write_all(b"x").is_err());
        assert!(w.write_at(0, b"GGUF").is_ok());
    }

    #[test]
    fn check_reports_each_kind_of_bad_file() {
        let dir = tempfile::tempdir().unwrap();
        let check = |name: &str, bytes: Option<&[u8]>| {
            let p = dir.path().join(name);
            if let Some(b) = bytes {
                std::fs::write(&p, b).unwrap();
            }
            ModelSource::Path(p).check().unwrap_err()
        };
        assert!(matches!(check("missing.gguf", None), Error::ModelNotFound { .. }));
        assert!(matches!(
            check("text.gguf", Some(b"just some text, long enough")),
            Error::NotGguf { .. }
        ));
        let good = crate::gguf::tests::build(&[("general.architecture", "llama")], 64);
        assert!(matches!(
            check("cut.gguf", Some(&good[..good.len() - 10])),
            Error::TruncatedGguf { .. }
        ));
        let alien = crate::gguf::tests::build(&[("general.architecture", "fnord9000")], 4);
        let err = check("alien.gguf", Some(&alien));
        assert!(
            matches!(&err, Error::UnsupportedArchitecture { architecture, .. } if architecture == "fnord9000")
        );
        let no_arch = crate::gguf::tests::build(&[], 4);
        assert!(matches!(
            check("noarch.gguf", Some(&no_arch)),
            Error::NotGguf { .. }
        ));
        std::fs::create_dir(dir.path().join("adir")).unwrap();
        assert!(matches!(
            ModelSource::Path(dir.path().join("adir")).check(),
            Err(Error::NotGguf { .. })
        ));
    }
}
