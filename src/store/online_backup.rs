//! The backup of a running server: the one-point read (`snapshot.rs`) into a spool file in the
//! data dir, which is then sent at the client's pace. On sled, writers wait only for the copy
//! to the local disk, never for the network; the spool has no name once open, so a crash
//! leaves nothing behind.

use std::{
    fs::File,
    io::{BufWriter, Seek, SeekFrom, Write},
    path::Path,
};

use super::backup::BackupReport;
use super::handle::Store;
use super::sled::files::{io_error, unnamed_file};
use crate::domain::{Error, Result};

impl Store {
    /// Writes a backup of the store, as it stands now, to an unnamed file in `dir`; returns the
    /// file, rewound, and what it holds. Everything in it is durable when this returns.
    pub async fn backup_to_spool(&self, dir: &Path) -> Result<(File, BackupReport)> {
        let dir = dir.to_owned();
        let (mut file, report) = self
            .off_the_runtime(move |store| async move {
                let mut file = unnamed_file(&dir)?;
                let mut out = BufWriter::with_capacity(1 << 20, &mut file);
                let report = store.write_backup(&mut out, &mut |_| {}).await?;
                out.flush().map_err(|e| io_error(&dir, e))?;
                drop(out);
                Ok((file, report))
            })
            .await?;
        // What was copied was committed; a change answered only once flushed may not be yet.
        self.sync().await?;
        file.seek(SeekFrom::Start(0)).map_err(Error::internal)?;
        Ok((file, report))
    }
}
