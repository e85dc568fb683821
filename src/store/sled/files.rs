//! Files on disk: private modes, and the fsyncs that make a new or renamed file survive a power
//! loss (a file's data is not enough: the directory entry naming it must be synced too).
//!
//! The data dir holds every email and every key and token hash, so it is 0700 and what is in
//! it 0600, whatever the umask; an existing data dir is tightened when it is opened.

use std::{
    fs::{self, DirBuilder, File},
    io::{BufWriter, Write},
    os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt},
    path::Path,
};

use crate::domain::{random_base62, Error, Result};

const DIR_MODE: u32 = 0o700;
const FILE_MODE: u32 = 0o600;

/// Creates `dir` (0700) and any missing parents, or tightens an existing one to 0700; the
/// parent's entry for it is synced.
pub(in crate::store) fn create_private_dir(dir: &Path) -> Result<()> {
    DirBuilder::new()
        .recursive(true)
        .mode(DIR_MODE)
        .create(dir)
        .map_err(|e| io_error(dir, e))?;
    set_mode(dir, DIR_MODE)?;
    fsync_parent(dir)
}

/// Tightens every file under `dir` to 0600 and every directory to 0700 (sled creates them
/// under the process umask), and fsyncs each, so that what sled created is stable by name.
pub(in crate::store) fn secure_tree(dir: &Path) -> Result<()> {
    for entry in fs::read_dir(dir).map_err(|e| io_error(dir, e))? {
        let path = entry.map_err(|e| io_error(dir, e))?.path();
        if path.is_dir() {
            secure_tree(&path)?;
        } else {
            set_mode(&path, FILE_MODE)?;
            sync_path(&path)?;
        }
    }
    set_mode(dir, DIR_MODE)?;
    sync_path(dir)
}

/// Writes `bytes` to a new file at `path`, 0600 from creation: written aside, fsynced, renamed
/// into place and the rename fsynced, so a crash leaves either the old file or the whole new one.
pub fn write_private_file(path: &Path, bytes: &[u8]) -> Result<()> {
    write_private_file_with(path, |file| {
        file.write_all(bytes)
            .map_err(|e| io_error(&path.with_extension("partial"), e))
    })
}

/// [`write_private_file`] for contents that `write` streams into the file (buffered); the
/// file replaces `path` only if `write` succeeds. Returns what `write` returned.
pub(in crate::store) fn write_private_file_with<T>(
    path: &Path,
    write: impl FnOnce(&mut dyn Write) -> Result<T>,
) -> Result<T> {
    let mut file = PrivateFile::create(path)?;
    let written = write(file.writer())?;
    file.commit()?;
    Ok(written)
}

/// A new private file written aside (`PATH.partial`, 0600 from creation) that becomes `path`
/// only on [`PrivateFile::commit`]; dropped uncommitted, it is removed. For writers that
/// await between writes (a backup read from etcd page by page).
pub struct PrivateFile {
    path: std::path::PathBuf,
    tmp: std::path::PathBuf,
    /// None once committed.
    writer: Option<BufWriter<File>>,
}

impl PrivateFile {
    pub fn create(path: &Path) -> Result<PrivateFile> {
        let tmp = path.with_extension("partial");
        // A fresh file, so 0600 holds even if an old partial file had wider permissions.
        let _ = fs::remove_file(&tmp);
        let file = File::options()
            .create_new(true)
            .write(true)
            .mode(FILE_MODE)
            .open(&tmp)
            .map_err(|e| io_error(&tmp, e))?;
        Ok(PrivateFile {
            path: path.to_owned(),
            tmp,
            writer: Some(BufWriter::with_capacity(1 << 20, file)),
        })
    }

    pub fn writer(&mut self) -> &mut (dyn Write + Send) {
        self.writer.as_mut().expect("only commit takes the writer")
    }

    /// Flushes and fsyncs the file, renames it into place and fsyncs the rename.
    pub fn commit(mut self) -> Result<()> {
        let writer = self.writer.take().expect("committed once");
        let synced = writer
            .into_inner()
            .map_err(|e| e.into_error())
            .and_then(|file| file.sync_all())
            .map_err(|e| io_error(&self.tmp, e))
            .and_then(|()| set_mode(&self.tmp, FILE_MODE))
            .and_then(|()| fs::rename(&self.tmp, &self.path).map_err(|e| io_error(&self.path, e)));
        if let Err(error) = synced {
            let _ = fs::remove_file(&self.tmp);
            return Err(error);
        }
        fsync_parent(&self.path)
    }
}

impl Drop for PrivateFile {
    fn drop(&mut self) {
        if self.writer.is_some() {
            let _ = fs::remove_file(&self.tmp);
        }
    }
}

/// Makes `path`'s creation, removal or rename durable by syncing the directory holding it.
pub(in crate::store) fn fsync_parent(path: &Path) -> Result<()> {
    match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => sync_path(parent),
        _ => sync_path(Path::new(".")),
    }
}

fn sync_path(path: &Path) -> Result<()> {
    File::open(path)
        .and_then(|f| f.sync_all())
        .map_err(|e| io_error(path, e))
}

fn set_mode(path: &Path, mode: u32) -> Result<()> {
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).map_err(|e| io_error(path, e))
}

pub(in crate::store) fn io_error(path: &Path, e: std::io::Error) -> Error {
    Error::internal(format!("{}: {e}", path.display()))
}

/// A new file in `dir` (0600 from creation) whose name is removed at once: it lives while open.
pub(in crate::store) fn unnamed_file(dir: &Path) -> Result<File> {
    let path = dir.join(format!("backup-{}.spool", random_base62(12)));
    let file = File::options()
        .create_new(true)
        .read(true)
        .write(true)
        .mode(0o600)
        .open(&path)
        .map_err(|e| io_error(&path, e))?;
    fs::remove_file(&path).map_err(|e| io_error(&path, e))?;
    Ok(file)
}
